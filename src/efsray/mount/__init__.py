"""Mount management: EFS mount options, mounting, the mount table, and health."""

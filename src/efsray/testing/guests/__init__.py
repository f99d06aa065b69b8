"""QEMU guests with a real Linux NFS client (see efsray.testing.guests.vm)."""

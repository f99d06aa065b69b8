"""What a guest boots from besides the cached image: the per-run initramfs and QEMU's command.

The initramfs (uncompressed newc cpio) holds busybox, the image's modules, ``/init`` and the
``efsray`` package being tested (byte-compiled on the host), so a code change never rebuilds
the image. ``/init`` loads the modules, mounts the read-only root with tmpfs on /tmp and /run,
sets the host name, configures eth0 without a default route, mounts the NFS export at
/mnt/efs, prints ``efsray-guest: READY`` on the console and starts the agent.

A *self-served* guest (``EFSRAY_NFS_SERVER=knfsd`` on the kernel command line) mounts Linux's
own NFS server instead of the host's nfs-ganesha: ``/init`` loads nfsd, mounts the guest's
scratch disk (``/dev/vdb``, ext4 with ``iversion``, so the change attribute is the inode's
version counter) at /srv/nfs, exports it (``rw,sync,no_root_squash,insecure,no_subtree_check,
fsid=0``) to 127.0.0.1 only, starts ``rpc.mountd`` and ``rpc.nfsd`` NFSv4-only (no rpcbind),
with no delegations (``fs.leases-enable = 0``: EFS grants none), 1 MiB READs and WRITEs
(``max_block_size``; knfsd's default scales with the guest's RAM) and a 10 s grace period, and
mounts ``127.0.0.1:/`` at /mnt/efs with the same options over loopback. Its first write waits
out the grace period before READY.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import efsray
from efsray.errors import EfsrayError
from efsray.testing.guests.image import GuestImage

__all__ = [
    "EFS_MOUNT_OPTIONS",
    "FAILED",
    "KNFSD_EXPORT_OPTIONS",
    "READY",
    "build_initramfs",
    "qemu_command",
]

#: What EFS's documentation and efs-utils use (DESIGN.md), plus the server's port.
EFS_MOUNT_OPTIONS = "vers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
READY = "efsray-guest: READY"
FAILED = "efsray-guest: FAILED"

_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 9>/dev/ttyS0  # the console, still open after /dev moves into the root
say() { echo "efsray-guest: $*" >&9; }
fail() { say "FAILED: $*"; poweroff -f; }
for m in $(cat /modules/order); do insmod /modules/$m || fail "insmod $m"; done
disks=/dev/vda
if [ "$EFSRAY_NFS_SERVER" = knfsd ]; then
  for m in $(cat /modules/order-server); do insmod /modules/$m || fail "insmod $m"; done
  disks="/dev/vda /dev/vdb"
fi
n=0
for d in $disks; do
  until [ -b $d ] && [ -d /sys/class/net/eth0 ] && ls /sys/class/virtio-ports/* >/dev/null 2>&1
  do
    n=$((n + 1)); [ $n -gt 600 ] && fail "virtio devices did not appear"; sleep 0.1
  done
done
mount -t ext4 -o ro /dev/vda /root || fail "mount of the root image"
mount -t tmpfs -o mode=1777 tmpfs /root/tmp
mount -t tmpfs tmpfs /root/run
mount --bind /src /root/opt/efsray && mount -o remount,bind,ro /root/opt/efsray
hostname "$EFSRAY_GUEST_NAME"
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || fail "network"
move_system() {
  mount --move /proc /root/proc && mount --move /sys /root/sys && mount --move /dev /root/dev
}
if [ "$EFSRAY_NFS_SERVER" = knfsd ]; then
  # Linux's own NFS server on this guest, exporting its scratch disk to itself only
  move_system || fail "moving /proc, /sys, /dev"
  # util-linux's mount: busybox's passes "iversion" to ext4, which wants it as a flag
  chroot /root /bin/mount -t ext4 -o iversion /dev/vdb /srv/nfs >&9 2>&1 \
    || fail "mount of the scratch disk"
  mount -t tmpfs -o mode=755 tmpfs /root/var/lib/nfs || fail "tmpfs on /var/lib/nfs"
  mkdir -p /root/var/lib/nfs/v4recovery /root/var/lib/nfs/rpc_pipefs
  touch /root/var/lib/nfs/etab /root/var/lib/nfs/rmtab
  echo 0 > /root/proc/sys/fs/leases-enable || fail "leases-enable"  # no delegations, as EFS
  mount -t nfsd nfsd /root/proc/fs/nfsd || fail "mount of the nfsd file system"
  echo 10 > /root/proc/fs/nfsd/nfsv4gracetime || fail "knfsd grace time"
  # 1 MiB READs and WRITEs as on EFS (knfsd's default scales with RAM: 128 KiB here)
  echo 1048576 > /root/proc/fs/nfsd/max_block_size || fail "knfsd max_block_size"
  chroot /root /usr/sbin/exportfs -o "$EFSRAY_KNFSD_EXPORT" 127.0.0.1:/srv/nfs >&9 2>&1 \
    || fail "exportfs"
  chroot /root /usr/sbin/rpc.mountd -N 2 -N 3 >&9 2>&1 || fail "rpc.mountd"
  chroot /root /usr/sbin/rpc.nfsd -H 127.0.0.1 -N 3 -V 4.1 8 >&9 2>&1 || fail "rpc.nfsd"
  mount -t nfs4 -o "$EFSRAY_NFS_OPTIONS" 127.0.0.1:/ /root/mnt/efs || fail "NFS mount of knfsd"
  echo ok > /root/mnt/efs/.efsray-ready && rm /root/mnt/efs/.efsray-ready \
    || fail "first write to knfsd"  # blocks until the grace period ends
else
  mount -t nfs4 -o "$EFSRAY_NFS_OPTIONS" 10.0.2.2:/export /root/mnt/efs || fail "NFS mount"
  move_system
fi
mkdir -p /root/dev/shm /root/dev/pts && mount -t tmpfs -o mode=1777 tmpfs /root/dev/shm
say "READY $(uname -r) $(cat /root/proc/uptime)"
PYTHONPATH=/opt/efsray HOME=/tmp chroot /root /usr/bin/python3 -u -m efsray.testing.guests._agent
say "agent exited: $?"
poweroff -f
"""

#: knfsd's export of a self-served guest's scratch disk (to 127.0.0.1 only).
KNFSD_EXPORT_OPTIONS = "rw,sync,no_root_squash,insecure,no_subtree_check,fsid=0"


def build_initramfs(image: GuestImage, dest: Path) -> Path:
    """An uncompressed newc cpio: busybox, the image's modules, /init and efsray's source."""
    stage = Path(tempfile.mkdtemp(prefix="initramfs.", dir=dest.parent))
    try:
        for d in ("bin", "proc", "sys", "dev", "root", "tmp"):
            (stage / d).mkdir()
        shutil.copy2(image.busybox, stage / "bin" / "busybox")
        shutil.copytree(image.modules, stage / "modules")
        package = Path(efsray.__file__).parent
        shutil.copytree(
            package, stage / "src" / "efsray", ignore=shutil.ignore_patterns("__pycache__")
        )
        # bytecode compiled here (the guest's root is read-only and compiling under TCG costs
        # seconds per process); CPython 3.11.x shares one bytecode format
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(stage / "src")],
            check=True,
            capture_output=True,
        )
        init = stage / "init"
        init.write_text(_INIT)
        init.chmod(0o755)
        names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        with open(dest, "wb") as out:
            subprocess.run(
                [str(image.busybox), "cpio", "-o", "-H", "newc"],
                input="\n".join(names).encode(),
                cwd=stage,
                stdout=out,
                stderr=subprocess.PIPE,
                check=True,
            )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


def qemu_command(
    image: GuestImage,
    initrd: Path,
    workdir: Path,
    name: str,
    nfs_port: int | None,
    memory_mb: int,
    *,
    scratch: Path | None = None,
) -> list[str]:
    """QEMU's command for one guest: it mounts the host's server on ``nfs_port`` or, given a
    ``scratch`` disk image (ext4), serves that disk itself with knfsd and mounts it."""
    if scratch is None:
        if nfs_port is None:
            raise EfsrayError("a guest needs the host server's nfs_port or a scratch disk")
        server = [f"EFSRAY_NFS_OPTIONS={EFS_MOUNT_OPTIONS},port={nfs_port},addr=10.0.2.2"]
        disks: list[str] = []
    else:
        server = [
            "EFSRAY_NFS_SERVER=knfsd",
            f"EFSRAY_KNFSD_EXPORT={KNFSD_EXPORT_OPTIONS}",
            f"EFSRAY_NFS_OPTIONS={EFS_MOUNT_OPTIONS},port=2049,addr=127.0.0.1",
        ]
        # cache=unsafe: the disk is thrown away with the guest, so its flushes need not reach
        # the host's disk (knfsd's sync export still commits each change in the guest)
        disks = ["-drive", f"file={scratch},if=virtio,format=raw,cache=unsafe"]
    append = " ".join(
        ["console=ttyS0", "panic=-1", "loglevel=4", f"EFSRAY_GUEST_NAME={name}", *server]
    )
    return [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-machine", "q35",
        "-cpu", "Nehalem",  # x86-64-v2, what numpy needs; no AVX for TCG to emulate slowly
        "-smp", "1",
        "-m", str(memory_mb),
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-kernel", str(image.kernel),
        "-initrd", str(initrd),
        "-append", append,
        "-drive", f"file={image.root},if=virtio,format=raw,readonly=on",
        *disks,
        "-netdev", "user,id=net0,net=10.0.2.0/24",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", f"file:{workdir / 'console.log'}",
        "-chardev", f"socket,id=ctl,path={workdir / 'ctl.sock'},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=ctl,name=efsray.ctl",
    ]  # fmt: skip

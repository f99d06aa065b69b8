"""What a guest boots from besides the cached image: the per-run initramfs and QEMU's command.

The initramfs (uncompressed newc cpio) holds busybox, the image's modules, ``/init`` and the
``efsray`` package being tested (byte-compiled on the host), so a code change never rebuilds
the image. ``/init`` loads the modules, mounts the read-only root with tmpfs on /tmp and /run,
sets the host name, configures eth0 without a default route, mounts the NFS export at
/mnt/efs, prints ``efsray-guest: READY`` on the console and starts the agent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import efsray
from efsray.testing.guests.image import GuestImage

__all__ = ["EFS_MOUNT_OPTIONS", "FAILED", "READY", "build_initramfs", "qemu_command"]

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
n=0
until [ -b /dev/vda ] && [ -d /sys/class/net/eth0 ] && ls /sys/class/virtio-ports/* >/dev/null 2>&1
do
  n=$((n + 1)); [ $n -gt 600 ] && fail "virtio devices did not appear"; sleep 0.1
done
mount -t ext4 -o ro /dev/vda /root || fail "mount of the root image"
mount -t tmpfs -o mode=1777 tmpfs /root/tmp
mount -t tmpfs tmpfs /root/run
mount --bind /src /root/opt/efsray && mount -o remount,bind,ro /root/opt/efsray
hostname "$EFSRAY_GUEST_NAME"
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || fail "network"
mount -t nfs4 -o "$EFSRAY_NFS_OPTIONS" 10.0.2.2:/export /root/mnt/efs || fail "NFS mount"
mount --move /proc /root/proc && mount --move /sys /root/sys && mount --move /dev /root/dev
mkdir -p /root/dev/shm /root/dev/pts && mount -t tmpfs -o mode=1777 tmpfs /root/dev/shm
say "READY $(uname -r) $(cat /root/proc/uptime)"
PYTHONPATH=/opt/efsray HOME=/tmp chroot /root /usr/bin/python3 -u -m efsray.testing.guests._agent
say "agent exited: $?"
poweroff -f
"""


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
    image: GuestImage, initrd: Path, workdir: Path, name: str, nfs_port: int, memory_mb: int
) -> list[str]:
    append = " ".join(
        [
            "console=ttyS0",
            "panic=-1",
            "loglevel=4",
            f"EFSRAY_GUEST_NAME={name}",
            f"EFSRAY_NFS_OPTIONS={EFS_MOUNT_OPTIONS},port={nfs_port},addr=10.0.2.2",
        ]
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
        "-netdev", "user,id=net0,net=10.0.2.0/24",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", f"file:{workdir / 'console.log'}",
        "-chardev", f"socket,id=ctl,path={workdir / 'ctl.sock'},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-device", "virtserialport,chardev=ctl,name=efsray.ctl",
    ]  # fmt: skip

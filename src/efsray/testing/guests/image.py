"""Build (lazily, once per key) what a QEMU guest with a real Linux NFS client boots from.

The cache entry ``/var/cache/efsray/guest/<key>/`` holds:

``vmlinuz``      Debian's ``linux-image-<abi>-cloud-amd64`` kernel (NFS v4.1 client as modules)
``modules/``     the modules the guest loads (virtio, NFS v4 and what they depend on) and
                 ``modules/order``, their load order; ``modules/order-server``, the kernel
                 NFS server's (nfsd and what it needs beyond those), loaded only by a guest
                 that serves its own export (``self_served`` in :mod:`.vm`)
``busybox``      the host's static busybox (the initramfs's shell, mount, insmod, ip)
``root.img``     a read-only ext4 root: ``mmdebstrap --variant=minbase bookworm`` with
                 python3 and nfs-kernel-server (rpc.nfsd, exportfs, rpc.mountd: the user space
                 of Linux's own NFS server), plus efsray's runtime dependencies installed from
                 wheels on the host (guests reach no package registry)
``build.json``   the inputs and how long the build took

The key hashes the kernel package's version, busybox's version, the pinned Python
dependencies (efsray's runtime requirements at the versions installed on the host, which are
what the host's tests use) and this file's own text, so changing any of them builds a new
entry and an old entry is never modified. efsray's own source is not in the image: each run
copies the source under test into the guest's initramfs (see :mod:`.vm`), so a code change
never rebuilds the image. Build: ``python -m efsray.testing.guests.image`` (prints the entry).

A build runs in a temporary sibling directory and is renamed into place when complete, so a
killed build leaves no half entry; a lock file serializes concurrent builds of one key.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from efsray.errors import EfsrayError

__all__ = [
    "CACHE_ROOT",
    "GuestImage",
    "GuestImageError",
    "build_image",
    "find_image",
    "image_key",
    "image_unavailable_reason",
]

CACHE_ROOT = Path(os.environ.get("EFSRAY_GUEST_CACHE", "/var/cache/efsray/guest"))
KERNEL_META = "linux-image-cloud-amd64"
SUITE = "bookworm"
#: Modules the guest loads, by name; their dependencies are added from modules.dep.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "nfsv4")
#: The kernel NFS server (knfsd), loaded after those only by a guest serving its own export.
SERVER_MODULES = ("nfsd",)
#: Debian packages in the root besides minbase: the interpreter, and knfsd's user space.
ROOT_PACKAGES = ("python3", "nfs-kernel-server")
#: efsray's runtime dependencies, used when efsray's own metadata is not installed (the
#: installed metadata, pyproject's [project] dependencies, is what the image gets otherwise).
GUEST_REQUIREMENTS = (
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pydantic-settings",
    "typer",
    "rich",
    "prometheus_client",
    "PyYAML",
    "xxhash",
    "blake3",
)
#: Test-only packages the guests need too: the conformance suite's cases, run in a guest by
#: tests/conformance/test_guests.py, use pytest.raises.
GUEST_TEST_REQUIREMENTS = ("pytest",)
_HOST_TOOLS = ("qemu-system-x86_64", "mmdebstrap", "mke2fs", "apt-get", "dpkg-deb", "depmod")
_BUSYBOX = "/bin/busybox"


class GuestImageError(EfsrayError, RuntimeError):
    """The guest image cannot be built or is incomplete."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A complete cache entry."""

    path: Path

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def root(self) -> Path:
        return self.path / "root.img"

    @property
    def modules(self) -> Path:
        return self.path / "modules"

    @property
    def busybox(self) -> Path:
        return self.path / "busybox"

    def info(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.path / "build.json").read_text())
        return data


def image_unavailable_reason() -> str | None:
    """Why a guest image cannot be built or booted here, or ``None``."""
    missing = [t for t in _HOST_TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: apt-get install qemu-system-x86 mmdebstrap "
            "e2fsprogs busybox-static (see .ci/apt-packages.txt)"
        )
    if not _is_static_busybox(Path(_BUSYBOX)):
        return f"{_BUSYBOX} is missing or not static: apt-get install busybox-static"
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return f"guests are x86_64 Linux (TCG); this is {sys.platform}/{os.uname().machine}"
    if os.geteuid() != 0:
        return "building the root image (mmdebstrap into a directory) needs root"
    return None


def _is_static_busybox(path: Path) -> bool:
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"ld-linux" not in path.read_bytes()[:65536]


def _run(cmd: list[str], *, log: Path | None = None, timeout: float = 1200.0) -> str:
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise GuestImageError(
            f"{cmd[0]} failed with exit code {done.returncode} while building the guest image: "
            f"{(done.stderr or done.stdout).strip()[-1500:]}"
        )
    return done.stdout


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel the meta-package ``linux-image-cloud-amd64`` names."""
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", KERNEL_META])
    match = re.search(r"Depends:\s*(linux-image-[\w.+-]+-cloud-amd64)", out)
    if match is None:
        raise GuestImageError(
            f"apt knows no {KERNEL_META}: run apt-get update (its Depends line was not found "
            f"in: {out.strip()[:200]!r})"
        )
    package = match.group(1)
    policy = _run(["apt-cache", "policy", package])
    ver = re.search(r"Candidate:\s*(\S+)", policy)
    if ver is None or ver.group(1) == "(none)":
        raise GuestImageError(f"apt has no candidate version of {package}: run apt-get update")
    return package, ver.group(1)


def pinned_requirements() -> list[str]:
    """efsray's guest requirements and all they depend on, at the versions on the host.

    The closure is walked through the installed distributions' metadata (markers evaluated
    for the guest: CPython 3.11 on Linux x86_64), so the wheels installed into the image are
    exactly the versions the host's tests run with, and all of them are in the cache key.
    """
    from packaging.requirements import Requirement

    env = {
        "python_version": "3.11",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "extra": "",
    }
    pins: dict[str, str] = {}
    try:
        declared = [Requirement(r) for r in md.requires("efsray") or []]
        todo = [r.name for r in declared if r.marker is None or r.marker.evaluate(env)]
    except md.PackageNotFoundError:
        todo = list(GUEST_REQUIREMENTS)
    todo += GUEST_TEST_REQUIREMENTS
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in pins:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError as exc:
            raise GuestImageError(
                f"{name} is not installed on the host; install efsray first "
                "(pip install -e '.[test]')"
            ) from exc
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return sorted(pins.values(), key=str.lower)


def _busybox_version() -> str:
    out = subprocess.run([_BUSYBOX], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def image_key() -> tuple[str, dict[str, object]]:
    """The cache key and the inputs it hashes."""
    package, version = kernel_package()
    inputs: dict[str, object] = {
        "kernel": f"{package}={version}",
        "busybox": _busybox_version(),
        "suite": SUITE,
        "packages": list(ROOT_PACKAGES),
        "python": pinned_requirements(),
        "script": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return f"{version}-{digest}", inputs


def find_image(cache_root: Path = CACHE_ROOT) -> GuestImage | None:
    """The complete cache entry for today's inputs, or None (nothing is built)."""
    key, _ = image_key()
    entry = cache_root / key
    return GuestImage(entry) if (entry / "build.json").is_file() else None


def build_image(cache_root: Path = CACHE_ROOT, *, log: Path | None = None) -> GuestImage:
    """The cache entry for today's inputs, built first if absent (minutes when cold)."""
    reason = image_unavailable_reason()
    if reason is not None:
        raise GuestImageError(f"cannot build the guest image: {reason}")
    key, inputs = image_key()
    entry = cache_root / key
    if (entry / "build.json").is_file():
        return GuestImage(entry)
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        if (entry / "build.json").is_file():
            return GuestImage(entry)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
        try:
            _build(work, inputs, log or work / "build.log")
            os.rename(work, entry)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return GuestImage(entry)


def _build(out: Path, inputs: dict[str, object], log: Path) -> None:
    started = time.monotonic()
    stage = out / "stage"
    rootfs = stage / "rootfs"
    stage.mkdir()
    # 1. The root file system: Debian minbase with python3 (the guest's interpreter) and
    #    nfs-kernel-server (a guest may serve its own export with knfsd).
    _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(ROOT_PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            SUITE,
            str(rootfs),
            *_mirrors(),
        ],
        log=log,
    )
    # 2. efsray's dependencies, as manylinux wheels for the guest's CPython 3.11.
    site = rootfs / "usr/local/lib/python3.11/dist-packages"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(site),
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
            "--abi",
            "cp311",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            *[str(p) for p in inputs["python"]],  # type: ignore[attr-defined]
        ],
        log=log,
    )
    _run(
        [
            "chroot",
            str(rootfs),
            "python3",
            "-m",
            "compileall",
            "-q",
            "-j",
            "2",
            "/usr/local/lib/python3.11/dist-packages",
        ],
        log=log,
    )
    for d in ("opt/efsray", "mnt/efs", "tmp", "run", "srv/nfs", "var/lib/nfs"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    # 3. The kernel and the modules the guest loads, from the Debian package itself.
    package = str(inputs["kernel"]).split("=", 1)[0]
    debs = stage / "debs"
    debs.mkdir()
    subprocess.run(
        ["apt-get", "download", str(inputs["kernel"])],
        cwd=debs,
        check=True,
        capture_output=True,
        timeout=600,
    )
    kernel_tree = stage / "kernel"
    (deb,) = debs.glob("*.deb")
    _run(["dpkg-deb", "-x", str(deb), str(kernel_tree)], log=log)
    abi = package.removeprefix("linux-image-")
    shutil.copy2(kernel_tree / "boot" / f"vmlinuz-{abi}", out / "vmlinuz")
    _run(["depmod", "-b", str(kernel_tree), abi], log=log)  # the .deb ships no modules.dep
    _copy_modules(kernel_tree / "lib/modules" / abi, out / "modules")
    shutil.copy2(_BUSYBOX, out / "busybox")
    # 4. One read-only ext4 image of the root (the kernel has ext4 built in).
    size_mb = int(_du_bytes(rootfs) * 1.25 / 2**20) + 64
    _run(
        [
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-O",
            "^has_journal",
            "-L",
            "efsray-guest",
            "-U",
            "0c0ffee0-0000-4000-8000-000000000017",
            "-E",
            "root_owner=0:0",
            "-d",
            str(rootfs),
            str(out / "root.img"),
            f"{size_mb}M",
        ],
        log=log,
    )
    shutil.rmtree(stage)
    info = dict(inputs, seconds=round(time.monotonic() - started, 1), root_mb=size_mb)
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")


def _mirrors() -> list[str]:
    """The host's own Debian sources (a deb822 file mmdebstrap reads), else its default."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    return [str(sources)] if sources.is_file() else []


def _du_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.lstat(p).st_size + 4096
    return total


def _copy_modules(tree: Path, dest: Path) -> None:
    """The wanted modules and their dependencies, with load orders (dependencies first):
    ``order`` for every guest, ``order-server`` for what knfsd needs beyond it."""
    deps: dict[str, list[str]] = {}
    for line in (tree / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
    by_name = {Path(t).name.split(".ko")[0].replace("-", "_"): t for t in deps}
    order: list[str] = []

    def visit(rel: str) -> None:
        if rel in order:
            return
        for dep in reversed(deps[rel]):  # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(rel)

    orders: dict[str, list[str]] = {}
    for list_name, wanted in (("order", WANTED_MODULES), ("order-server", SERVER_MODULES)):
        first = len(order)
        for name in wanted:
            if name in by_name:  # else built into this kernel
                visit(by_name[name])
        orders[list_name] = order[first:]
    dest.mkdir()
    for list_name, rels in orders.items():
        names = []
        for rel in rels:
            src = tree / rel
            name = src.name
            if name.endswith(".xz"):
                name = name.removesuffix(".xz")
                _run(["sh", "-c", f"xz -dc '{src}' > '{dest / name}'"])
            else:
                shutil.copy2(src, dest / name)
            names.append(name)
        (dest / list_name).write_text("\n".join(names) + "\n")


def main() -> int:
    started = time.monotonic()
    try:
        image = build_image()
    except GuestImageError as exc:
        print(f"efsray guest image: {exc}", file=sys.stderr)
        return 1
    print(f"{image.path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

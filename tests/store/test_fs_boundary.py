"""The store reaches the filesystem only through efsray.store.nfs (issue 17.3): an AST scan
of every other module of the store for calls that touch a path."""

from __future__ import annotations

import ast
from pathlib import Path

import efsray.store

STORE = Path(efsray.store.__file__).parent
EXEMPT = {"nfs.py"}

OS_PATH_CALLS = {
    "open", "stat", "lstat", "unlink", "remove", "rename", "replace", "link", "symlink",
    "mkdir", "makedirs", "rmdir", "removedirs", "listdir", "scandir", "walk", "chmod",
    "chown", "utime", "truncate", "access", "readlink", "statvfs", "mkfifo", "mknod",
}  # fmt: skip
OS_PATH_MODULE_CALLS = {
    "exists", "lexists", "isdir", "isfile", "islink", "ismount", "getsize", "getmtime",
    "getatime", "getctime", "realpath", "samefile",
}  # fmt: skip
PATH_METHODS = {
    "exists", "is_dir", "is_file", "is_symlink", "is_mount", "stat", "lstat", "read_bytes",
    "read_text", "write_bytes", "write_text", "unlink", "mkdir", "rmdir", "iterdir", "glob",
    "rglob", "touch", "chmod", "symlink_to", "hardlink_to", "samefile", "readlink",
}  # fmt: skip
BANNED_MODULES = {"shutil", "tempfile", "glob", "io.open"}


def _violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in [*names, module]:
                if name in BANNED_MODULES:
                    found.append(f"line {node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(f"line {node.lineno}: open()")
        if not isinstance(func, ast.Attribute):
            continue
        owner = func.value
        if isinstance(owner, ast.Name) and owner.id == "os" and func.attr in OS_PATH_CALLS:
            found.append(f"line {node.lineno}: os.{func.attr}()")
        elif (
            isinstance(owner, ast.Attribute)
            and isinstance(owner.value, ast.Name)
            and (owner.value.id, owner.attr) == ("os", "path")
            and func.attr in OS_PATH_MODULE_CALLS
        ):
            found.append(f"line {node.lineno}: os.path.{func.attr}()")
        elif func.attr in PATH_METHODS and not (
            isinstance(owner, ast.Name) and owner.id in ("os", "np", "pa", "pc")
        ):
            found.append(f"line {node.lineno}: .{func.attr}()")
    return found


def test_only_nfs_py_touches_the_filesystem() -> None:
    # every module of the store, its subpackages (the results table) included
    modules = sorted(p for p in STORE.rglob("*.py") if p.name not in EXEMPT)
    assert len(modules) >= 15
    offences = {
        str(p.relative_to(STORE)): bad
        for p in modules
        if (bad := _violations(p.read_text(encoding="utf-8")))
    }
    assert offences == {}, offences


def test_the_scan_finds_what_it_looks_for() -> None:
    sample = (
        "import shutil\nimport os\nfrom pathlib import Path\n"
        "os.unlink(p)\nos.path.isdir(p)\nPath(p).exists()\nopen(p)\nx.read_bytes()\n"
    )
    assert len(_violations(sample)) == 6
    assert _violations("os.fstat(fd)\nos.read(fd, 1)\nvlog.has_history()\n") == []

"""EFSMountConfig: options, validation, and the four renderings of one mount."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.config import load_settings
from efsray.errors import ConfigError
from efsray.mount import EFSMountConfig, MountOptionWarning
from efsray.mount.options import (
    FSTAB_EXTRA_OPTIONS,
    HARMFUL_OPTIONS,
    IGNORED_OPTIONS,
    RECOMMENDED_OPTIONS,
    harmful_reason,
    merge_options,
    option_key,
    split_options,
)

DNS = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"


def make(**kw) -> EFSMountConfig:
    kw.setdefault("efs_dns_name", DNS)
    kw.setdefault("mount_path", "/mnt/efs")
    return EFSMountConfig(**kw)


def test_default_options_are_aws_recommended_without_intr() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default config warns about nothing
        config = make()
    options = config.get_mount_options()
    assert options == list(RECOMMENDED_OPTIONS)
    assert "intr" not in options
    assert len({option_key(o) for o in options}) == len(options)
    assert config.throughput_mode == "elastic"
    assert config.performance_mode == "generalPurpose"
    assert config.file_system_id == "fs-0123456789abcdef0"
    assert config.region == "us-east-1"


def test_nfs_version_replaces_nfsvers() -> None:
    with pytest.warns(MountOptionWarning, match="4.1"):
        options = make(nfs_version="4.0").get_mount_options()
    assert options[0] == "nfsvers=4.0"
    assert sum(o.startswith("nfsvers=") for o in options) == 1


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"efs_dns_name": "not a host"}, "efs_dns_name"),
        ({"efs_dns_name": ""}, "efs_dns_name"),
        ({"nfs_version": "3"}, "NFSv3"),
        ({"nfs_version": "4.2"}, "nfs_version '4.2'"),
        ({"performance_mode": "turbo"}, "performance_mode 'turbo'"),
        ({"throughput_mode": "fast"}, "throughput_mode 'fast'"),
        ({"mount_type": "cifs"}, "mount_type 'cifs'"),
        ({"tls": True}, "mount_type='efs'"),
        ({"mount_type": "efs", "iam": True}, "require tls"),
        ({"mount_type": "efs", "tls": True, "access_point": "ap-1"}, "fsap-"),
        ({"mount_target_ip": "10.0.1.300"}, "mount_target_ip"),
        ({"export_path": "models"}, "export_path"),
        ({"export_path": "/a/../b"}, "export_path"),
        ({"mount_path": ""}, "mount_path"),
        ({"extra_options": ["rsize=1,wsize=1"]}, "malformed"),
        ({"extra_options": ["a b"]}, "malformed"),
        ({"extra_options": "vers=4.0"}, "nfs_version"),
        ({"extra_options": "tls"}, "amazon-efs-utils option"),
    ],
)
def test_invalid_inputs_are_clear_errors(kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        make(**kw)


def test_max_io_works_but_warns() -> None:
    with pytest.warns(MountOptionWarning, match="generalPurpose"):
        config = make(performance_mode="maxIO")
    # The seed's maxIO branch appended duplicate rsize/wsize; AWS's advice is 1 MiB regardless.
    assert config.get_mount_options() == list(RECOMMENDED_OPTIONS)
    assert any("maxIO" in w for w in config.option_warnings)


def test_overrides_replace_in_place_and_extend() -> None:
    config = make(extra_options=["timeo=300", "noatime", "rsize=65536"])
    options = config.get_mount_options()
    assert options[:4] == ["nfsvers=4.1", "rsize=65536", "wsize=1048576", "hard"]
    assert "timeo=300" in options and "timeo=600" not in options
    assert options[-1] == "noatime"
    assert make(extra_options="timeo=300,noatime") == make(extra_options=("timeo=300", "noatime"))


@pytest.mark.parametrize("harmful", sorted(HARMFUL_OPTIONS))
def test_harmful_overrides_warn_but_apply(harmful: str) -> None:
    with pytest.warns(MountOptionWarning, match="harmful"):
        config = make(extra_options=[harmful])
    assert harmful in config.get_mount_options()
    if harmful == "soft":
        assert "hard" not in config.get_mount_options()


@pytest.mark.parametrize("ignored", sorted(IGNORED_OPTIONS))
def test_ignored_options_are_dropped_with_a_warning(ignored: str) -> None:
    with pytest.warns(MountOptionWarning, match="dropped"):
        config = make(extra_options=[ignored])
    assert ignored not in config.get_mount_options()


def test_mount_argv_and_command() -> None:
    config = make(mount_path="/mnt/my efs")
    argv = config.mount_argv()
    assert argv == [
        "mount",
        "-t",
        "nfs4",
        "-o",
        ",".join(RECOMMENDED_OPTIONS),
        f"{DNS}:/",
        "/mnt/my efs",
    ]
    assert shlex.split(config.mount_command()) == argv


def test_efs_helper_mount() -> None:
    config = make(
        mount_type="efs", tls=True, iam=True, access_point="fsap-0123456789abcdef0",
        export_path="/models/",
    )  # fmt: skip
    argv = config.mount_argv("/sbin/mount")
    assert argv[:3] == ["/sbin/mount", "-t", "efs"]
    assert argv[-2] == "fs-0123456789abcdef0:/models"
    options = argv[4].split(",")
    assert options[: len(RECOMMENDED_OPTIONS)] == list(RECOMMENDED_OPTIONS)
    assert options[len(RECOMMENDED_OPTIONS) :] == [
        "tls",
        "iam",
        "accesspoint=fsap-0123456789abcdef0",
    ]


def test_mount_target_ip() -> None:
    nfs = make(mount_target_ip="10.0.1.100")
    assert nfs.device == "10.0.1.100:/"
    assert nfs.compose_driver_opts()["o"].startswith("addr=10.0.1.100,")
    efs = make(mount_type="efs", mount_target_ip="10.0.1.100")
    assert efs.device == "fs-0123456789abcdef0:/"
    assert "mounttargetip=10.0.1.100" in efs.get_mount_options()
    assert make(efs_dns_name="fd00::5").device == "[fd00::5]:/"


def test_fstab_line() -> None:
    line = make(mount_path="/mnt/my efs").fstab_line()
    fields = line.split(" ")
    assert len(fields) == 6
    assert fields[0] == f"{DNS}:/"
    assert fields[1] == "/mnt/my\\040efs"
    assert fields[2] == "nfs4"
    assert fields[3].split(",") == [*RECOMMENDED_OPTIONS, *FSTAB_EXTRA_OPTIONS]
    assert fields[4:] == ["0", "0"]


def test_compose_driver_opts() -> None:
    opts = make(export_path="/models").compose_driver_opts()
    assert opts == {
        "type": "nfs",
        "o": f"addr={DNS}," + ",".join(RECOMMENDED_OPTIONS),
        "device": ":/models",
    }
    placeholder = make().compose_driver_opts(addr="${EFS_DNS_NAME}")
    assert placeholder["o"].startswith("addr=${EFS_DNS_NAME},nfsvers=4.1,")
    # userspace-only options never reach mount(2)
    with_userspace = make(extra_options=["nofail", "_netdev"]).compose_driver_opts()
    assert "nofail" not in with_userspace["o"] and "_netdev" not in with_userspace["o"]
    with pytest.raises(ConfigError, match="local volume driver"):
        make(mount_type="efs", tls=True).compose_driver_opts()


def test_mount_path_is_made_absolute_without_touching_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert make(mount_path="data").mount_path == str(tmp_path / "data")
    assert make(mount_path=Path("/mnt/x/")).mount_path == "/mnt/x"


def test_config_is_frozen_and_hashable() -> None:
    config = make()
    with pytest.raises(AttributeError):
        config.mount_path = "/elsewhere"  # type: ignore[misc]
    assert hash(config) == hash(make())


def test_from_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EFS_MOUNT_PATH")
    env = tmp_path / ".env"
    env.write_text(
        f"EFS_DNS_NAME={DNS}\nEFS_MOUNT_PATH=/data\nEFS_MOUNT_TYPE=efs\nEFS_TLS=true\n"
        "EFS_ACCESS_POINT=fsap-0123456789abcdef0\nEFS_MOUNT_OPTIONS=timeo=300\n"
        "EFS_EXPORT_PATH=/models\n"
    )
    config = EFSMountConfig.from_settings(load_settings(env))
    assert config.mount_path == "/data"
    assert config.device == "fs-0123456789abcdef0:/models"
    assert "timeo=300" in config.get_mount_options()
    assert "accesspoint=fsap-0123456789abcdef0" in config.get_mount_options()


def test_from_settings_names_the_variables(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="EFS_DNS_NAME is not set"):
        EFSMountConfig.from_settings(load_settings())
    monkeypatch.setenv("EFS_DNS_NAME", DNS)
    monkeypatch.setenv("EFS_NFS_VERSION", "3")
    with pytest.raises(ConfigError, match="EFS_"):
        EFSMountConfig.from_settings(load_settings())


def test_every_constant_option_is_well_formed() -> None:
    for option in [*RECOMMENDED_OPTIONS, *HARMFUL_OPTIONS, *IGNORED_OPTIONS, *FSTAB_EXTRA_OPTIONS]:
        assert option == option.strip() and "," not in option and " " not in option
    assert all(harmful_reason(o) for o in HARMFUL_OPTIONS)
    assert not any(harmful_reason(o) for o in RECOMMENDED_OPTIONS)


# --- properties ----------------------------------------------------------------------------

_names = st.sampled_from(
    ["rsize", "wsize", "timeo", "retrans", "hard", "soft", "ac", "noac", "noresvport",
     "resvport", "nfsvers", "vers", "noatime", "lookupcache", "actimeo", "sync", "async"]
)  # fmt: skip
_options = st.builds(
    lambda name, value: name if value is None else f"{name}={value}",
    _names,
    st.none() | st.integers(0, 2**20).map(str),
)


@given(st.lists(_options, max_size=12), st.lists(_options, max_size=12))
def test_merge_never_duplicates_and_last_override_wins(base: list, overrides: list) -> None:
    merged = merge_options(base, overrides)
    keys = [option_key(o) for o in merged]
    assert len(keys) == len(set(keys))
    for option in overrides:
        last = [o for o in overrides if option_key(o) == option_key(option)][-1]
        assert last in merged


@given(st.text(max_size=60))
def test_option_helpers_never_raise(text: str) -> None:
    for option in split_options(text):
        option_key(option)
        harmful_reason(option)


@given(st.lists(_options, max_size=8))
def test_config_with_any_wellformed_overrides_has_unique_keys(overrides: list) -> None:
    overrides = [o for o in overrides if option_key(o) != "nfsvers"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MountOptionWarning)
        options = make(extra_options=overrides).get_mount_options()
    assert len({option_key(o) for o in options}) == len(options)

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.config import is_hostname, load_settings, mask_dsn
from efsray.errors import ConfigError, EfsrayError


def test_defaults_use_local_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EFS_MOUNT_PATH")
    s = load_settings()
    assert s.store_root == Path("./efs-data")
    assert s.ray_head_port == 6379


def test_env_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch) -> None:
    env = tmp_path / ".env.cloud"
    env.write_text(
        "EFS_DNS_NAME=fs-0123456789abcdef0.efs.us-east-1.amazonaws.com\n"
        "EFS_MOUNT_PATH=/mnt/efs\nAWS_REGION=us-east-1\nNEON_POOL_MAX_SIZE=50\n"
    )
    monkeypatch.setenv("NEON_POOL_MAX_SIZE", "20")
    monkeypatch.delenv("EFS_MOUNT_PATH")
    s = load_settings(env)
    assert s.efs_dns_name == "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"
    assert s.store_root == Path("/mnt/efs")
    assert s.neon_pool_max_size == 20


def test_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.env")


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("EFS_DNS_NAME", "not a host", "EFS_DNS_NAME"),
        ("RAY_HEAD_PORT", "10001", "GCS port"),
        ("RAY_HEAD_PORT", "seventy", "RAY_HEAD_PORT"),
        ("AWS_REGION", "useast1", "AWS region"),
        ("AWS_AVAILABILITY_ZONE", "us-east-1", "availability zone"),
        ("EFS_MOUNT_TARGET_IP", "10.0.1.300", "EFS_MOUNT_TARGET_IP"),
        ("NEON_POOL_MIN_SIZE", "-1", "NEON_POOL_MIN_SIZE"),
        ("NEON_CONNECTION_STRING", "mysql://u:p@h/db", "scheme"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, var: str, value: str, needle: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=needle) as info:
        load_settings()
    assert isinstance(info.value, EfsrayError)
    assert var in str(info.value)


def test_pool_min_above_max_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("NEON_POOL_MIN_SIZE", "60")
    monkeypatch.setenv("NEON_POOL_MAX_SIZE", "50")
    with pytest.raises(ConfigError, match="min <= max"):
        load_settings()


def test_secrets_are_masked_everywhere(monkeypatch) -> None:
    monkeypatch.setenv("NEON_CONNECTION_STRING", "postgresql://alice:hunter2@ep-x.neon.tech/db")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-very-secret")
    s = load_settings()
    shown = repr(s) + str(s.describe())
    assert "hunter2" not in shown and "tok-very-secret" not in shown
    assert s.describe()["NEON_CONNECTION_STRING"] == "postgresql://alice:***@ep-x.neon.tech/db"
    assert s.neon_connection_string is not None
    assert s.neon_connection_string.get_secret_value().endswith("/db")


def test_secret_is_masked_in_errors(monkeypatch) -> None:
    monkeypatch.setenv("NEON_CONNECTION_STRING", "mysql://alice:hunter2@h/db")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)


@given(
    user=st.text("abcdefghijklmnop", min_size=1, max_size=8),
    password=st.text(st.characters(blacklist_characters="@", codec="ascii"), min_size=3),
)
def test_mask_dsn_never_leaks_the_password(user: str, password: str) -> None:
    masked = mask_dsn(f"postgresql://{user}:{password}@host.example/db")
    assert masked == f"postgresql://{user}:***@host.example/db"


def test_mask_keyword_dsn() -> None:
    assert mask_dsn("host=h password='a b' user=u") == "host=h password=*** user=u"


@given(st.text(max_size=80))
def test_is_hostname_never_raises(value: str) -> None:
    is_hostname(value)


@pytest.mark.parametrize(
    "name", ["fs-0123456789abcdef0.efs.us-east-1.amazonaws.com", "localhost", "10.0.0.1", "::1"]
)
def test_valid_hostnames(name: str) -> None:
    assert is_hostname(name)


@pytest.mark.parametrize("name", ["", "a b", "-bad.com", "bad-.com", "a..b", "x" * 64, "é.com"])
def test_invalid_hostnames(name: str) -> None:
    assert not is_hostname(name)

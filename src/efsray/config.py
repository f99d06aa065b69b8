"""Typed settings, read from the environment and optionally from an env file.

Variable names are the original plan's (``EFS_DNS_NAME``, ``EFS_MOUNT_PATH``,
``NEON_CONNECTION_STRING``, ...), so an existing ``.env.cloud`` keeps working. The environment
wins over the env file. Every invalid value becomes one :class:`~efsray.errors.ConfigError`
that names the variable, shows the value (masked when secret) and says what to set instead.
Secrets never appear unmasked in ``repr``, ``describe()`` or error messages.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from efsray.errors import ConfigError

__all__ = [
    "Settings",
    "explain_setting_error",
    "is_hostname",
    "load_settings",
    "mask_dsn",
    "parse_size",
]

RAY_CLIENT_PORT = 10001
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_AZ = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d[a-z]$")


def is_hostname(value: str) -> bool:
    """True for an RFC 1123 host name or a literal IP address."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    if not value or len(value) > 253:
        return False
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    return all(_LABEL.match(label) for label in labels)


_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def mask_dsn(dsn: str) -> str:
    """Hide the password in a PostgreSQL URL or keyword/value connection string.

    >>> mask_dsn("postgresql://alice:s3cret@db.example.com/neondb?sslmode=require")
    'postgresql://alice:***@db.example.com/neondb?sslmode=require'
    >>> mask_dsn("host=db user=alice password=s3cret")
    'host=db user=alice password=***'
    >>> mask_dsn("alice:s3cret@db")  # malformed: hide more
    'alice:***@db'
    >>> mask_dsn("alice://s3cret@db")  # not a PostgreSQL URL: malformed too
    'alice:***@db'
    """
    if _URL_SCHEME.match(dsn) and dsn.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        # Plain string surgery, not urlsplit: a password with an unescaped '#', '/' or '?'
        # is malformed but common, and must be hidden all the same. When in doubt, hide more.
        scheme, rest = dsn.split("://", 1)
        userinfo, at, host = rest.rpartition("@")
        if at:
            user = userinfo.split(":", 1)[0]
            rest = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
        return re.sub(r"(?i)(password=)[^&]*", r"\1***", f"{scheme}://{rest}")
    if "=" not in dsn:
        # Neither a URL nor key=value: malformed, so nothing says where a secret ends. Keep
        # only a user name before an '@' (``u:pw@host`` -> ``u:***@host``); hide the rest.
        userinfo, at, host = dsn.rpartition("@")
        if at:
            return f"{userinfo.split(':', 1)[0]}:***@{host}"
        return "***" if dsn else dsn
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


class Settings(BaseSettings):
    """Everything efsray reads from the environment. Immutable once loaded."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, env_file_encoding="utf-8"
    )

    # --- EFS ---------------------------------------------------------------------------
    efs_dns_name: str | None = Field(
        default=None, description="EFS file system DNS name, fs-....efs.REGION.amazonaws.com"
    )
    efs_mount_path: Path = Field(
        default=Path("./efs-data"),
        description="Where the shared volume is mounted; the store's root. A plain local "
        "directory is the embedded default.",
    )
    efs_mount_target_ip: ipaddress.IPv4Address | None = Field(
        default=None, description="Mount target IP, to mount without DNS"
    )
    efs_region: str | None = Field(default=None, description="Region of the file system")

    # --- Mount management (efsray.mount; owned by the mount subsystem) ------------------
    # Plain values here; EFSMountConfig.from_settings() validates them together and names
    # the variable in its error (one source of truth for what a valid mount is).
    efs_mount_type: Literal["nfs4", "efs"] = Field(
        default="nfs4",
        description="nfs4: kernel NFS client; efs: amazon-efs-utils (tls, iam, access points)",
    )
    efs_export_path: str = Field(default="/", description="Path inside EFS to mount, e.g. /models")
    efs_mount_options: str | None = Field(
        default=None,
        description="Extra/overriding NFS options, comma-separated (e.g. timeo=300,noatime)",
    )
    efs_nfs_version: str = Field(default="4.1", description="NFS version: 4.1 (advised) or 4.0")
    efs_performance_mode: str = Field(
        default="generalPurpose", description="EFS performance mode: generalPurpose or maxIO"
    )
    efs_throughput_mode: str = Field(
        default="elastic", description="EFS throughput mode: elastic, bursting or provisioned"
    )
    efs_tls: bool = Field(default=False, description="Encrypt in transit (mount type efs)")
    efs_iam: bool = Field(default=False, description="IAM authorization (efs, needs EFS_TLS)")
    efs_access_point: str | None = Field(
        default=None, description="EFS access point id fsap-... (efs, needs EFS_TLS)"
    )
    efs_health_timeout: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds before `efsray health` says hung"
    )

    # --- Ray ---------------------------------------------------------------------------
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join: 'auto', HOST:6379 (GCS) or ray://HOST:10001 (client). "
        "Unset: start Ray in-process.",
    )
    ray_head_host: str = Field(default="ray-head", description="Head node host name")
    ray_head_port: int = Field(
        default=6379, ge=1, le=65535, description="Head GCS port that workers join (not 10001)"
    )
    ray_auth_mode: Literal["disabled", "token"] | None = Field(
        default=None, description="Ray >= 2.52 authentication mode"
    )
    ray_auth_token: SecretStr | None = Field(default=None, description="Ray auth token")
    ray_auth_token_path: Path | None = Field(default=None, description="File with the token")

    # --- Neon / PostgreSQL -------------------------------------------------------------
    neon_connection_string: SecretStr | None = Field(
        default=None, description="postgresql:// URL of the Neon database"
    )
    neon_pool_min_size: int = Field(default=1, ge=0, le=1000, description="Pool minimum size")
    neon_pool_max_size: int = Field(default=10, ge=1, le=1000, description="Pool maximum size")

    # --- Neon connector: pool timeouts, session, sync service (efsray.connector) ------------
    # Durations are float seconds. The URL's own parameters (sslmode, application_name,
    # connect_timeout) win over these defaults.
    neon_connect_timeout: float = Field(
        default=10.0, gt=0, le=600, description="Seconds to wait for a new connection"
    )
    neon_pool_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a caller waits for a free pooled connection before 'pool exhausted'",
    )
    neon_statement_timeout: float = Field(
        default=0.0, ge=0, le=86400, description="Per-statement limit in seconds; 0 means none"
    )
    neon_application_name: str = Field(
        default="efsray",
        description="application_name the server shows in pg_stat_activity",
    )
    neon_sync_interval: float = Field(
        default=60.0, gt=0, le=86400, description="Seconds between two sync cycles"
    )
    neon_sync_host: str = Field(
        default="127.0.0.1", description="Address the sync service's health endpoint binds"
    )
    neon_sync_port: int = Field(
        default=8765, ge=0, le=65535, description="Port of the health endpoint (0: any free)"
    )
    neon_sync_symbols: str = Field(
        default="",
        description="Comma-separated symbols whose market data the service exports to the "
        "database ('' exports none, '*' every stored symbol)",
    )

    # --- AWS ---------------------------------------------------------------------------
    aws_region: str | None = Field(default=None, description="AWS region of the cluster")
    aws_availability_zone: str | None = Field(default=None, description="AWS availability zone")

    # --- Monitor (efsray.monitor, `efsray monitor` / `efsray bench`) -------------------
    # Owned by the monitor subsystem. Sizes accept a number of bytes or a binary suffix
    # (K, M, G: 32M = 32 MiB). Latency thresholds apply to the p99 of the probe's read,
    # write and fsync samples; free-space thresholds to free bytes and free inodes.
    efsray_monitor_mount_paths: str | None = Field(
        default=None,
        description="Comma-separated paths to monitor. Unset: EFS_MOUNT_PATH only.",
    )
    efsray_monitor_host: str = Field(
        default="127.0.0.1",
        description="Address the /metrics and /healthz server binds. Inside a container that "
        "Prometheus scrapes over the compose network, set 0.0.0.0 (and do not publish it).",
    )
    efsray_monitor_port: int = Field(
        default=9641, ge=0, le=65535, description="Port of /metrics and /healthz (0: any free)"
    )
    efsray_monitor_interval: float = Field(
        default=60.0, ge=0.1, le=86400.0, description="Seconds between two probe runs"
    )
    efsray_monitor_probe_timeout: float = Field(
        default=20.0,
        gt=0.0,
        le=3600.0,
        description="Deadline of one probe run, in seconds; past it the mount is 'hung'",
    )
    efsray_monitor_latency_samples: int = Field(
        default=100, ge=0, le=100_000, description="Timed reads, writes and fsyncs per probe"
    )
    efsray_monitor_metadata_files: int = Field(
        default=50, ge=0, le=100_000, description="Files created, stat'ed, renamed, unlinked"
    )
    efsray_monitor_throughput_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        le=64 * 1024**3,
        description="Size of the sequential write/read file (0: skip the throughput probe)",
    )
    efsray_monitor_block_bytes: int = Field(
        default=1024 * 1024,
        ge=4096,
        le=256 * 1024 * 1024,
        description="Block size of the sequential write/read (a multiple of 4096)",
    )
    efsray_monitor_latency_degraded_ms: float = Field(
        default=50.0, gt=0.0, description="p99 latency above this: degraded"
    )
    efsray_monitor_latency_failing_ms: float = Field(
        default=1000.0, gt=0.0, description="p99 latency above this: failing"
    )
    efsray_monitor_free_degraded_percent: float = Field(
        default=10.0, ge=0.0, le=100.0, description="Free space or inodes below this: degraded"
    )
    efsray_monitor_free_failing_percent: float = Field(
        default=2.0, ge=0.0, le=100.0, description="Free space or inodes below this: failing"
    )
    efsray_monitor_retrans_degraded_ratio: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="NFS retransmissions per RPC in an interval above this: degraded",
    )
    efsray_monitor_stale_probe_seconds: float = Field(
        default=3600.0,
        gt=0.0,
        description="Probe directories left by another host are removed after this age",
    )

    @field_validator("efsray_monitor_throughput_bytes", "efsray_monitor_block_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("efsray_monitor_throughput_bytes", "efsray_monitor_block_bytes")
    @classmethod
    def _aligned(cls, value: int) -> int:
        if value % 4096:
            raise ValueError(
                f"is {value} bytes, not a multiple of 4096 (direct I/O needs aligned sizes); "
                f"use e.g. {max(4096, value // 4096 * 4096)}"
            )
        return value

    @field_validator("efsray_monitor_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        if not is_hostname(value):
            raise ValueError("is not an address to bind, e.g. 127.0.0.1 or 0.0.0.0")
        return value

    @field_validator("efs_dns_name", "ray_head_host")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and not is_hostname(value):
            raise ValueError(
                "is not a host name (letters, digits and '-' in dot-separated labels), "
                "e.g. fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"
            )
        return value

    @field_validator("efs_region", "aws_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.match(value):
            raise ValueError("is not an AWS region name such as us-east-1")
        return value

    @field_validator("aws_availability_zone")
    @classmethod
    def _az(cls, value: str | None) -> str | None:
        if value is not None and not _AZ.match(value):
            raise ValueError("is not an availability zone name such as us-east-1a")
        return value

    @field_validator("ray_head_port")
    @classmethod
    def _not_client_port(cls, value: int) -> int:
        if value == RAY_CLIENT_PORT:
            raise ValueError(
                "is the Ray Client port; workers join the head's GCS port "
                "(`ray start --address=HEAD:6379`): set RAY_HEAD_PORT=6379"
            )
        return value

    @field_validator("neon_connection_string")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        if "://" in raw:
            scheme = raw.split("://", 1)[0]
            if scheme not in ("postgresql", "postgres"):
                raise ValueError(f"has scheme {scheme!r}; use postgresql://USER:PASSWORD@HOST/DB")
        elif "=" not in raw:
            raise ValueError("is neither a postgresql:// URL nor a key=value connection string")
        return SecretStr(raw)

    @field_validator("neon_application_name")
    @classmethod
    def _application_name(cls, value: str) -> str:
        if not value or len(value) > 63 or not all(" " <= c <= "~" for c in value):
            raise ValueError("must be 1-63 printable ASCII characters (PostgreSQL's limit)")
        return value

    @field_validator("neon_sync_host")
    @classmethod
    def _sync_host(cls, value: str) -> str:
        if not is_hostname(value):
            raise ValueError("is not a host name or IP address to bind, e.g. 127.0.0.1")
        return value

    @field_validator("neon_sync_symbols")
    @classmethod
    def _sync_symbols(cls, value: str) -> str:
        # Each name is checked as a store symbol by the connector (config imports no store).
        value = value.strip()
        if value in ("", "*"):
            return value
        return ",".join(n.strip() for n in value.split(",") if n.strip())

    @model_validator(mode="after")
    def _pool_sizes(self) -> Settings:
        if self.neon_pool_min_size > self.neon_pool_max_size:
            raise ValueError(
                f"NEON_POOL_MIN_SIZE={self.neon_pool_min_size} is larger than "
                f"NEON_POOL_MAX_SIZE={self.neon_pool_max_size}; make min <= max"
            )
        return self

    @model_validator(mode="after")
    def _monitor_thresholds(self) -> Settings:
        if self.efsray_monitor_latency_degraded_ms > self.efsray_monitor_latency_failing_ms:
            raise ValueError(
                f"EFSRAY_MONITOR_LATENCY_DEGRADED_MS={self.efsray_monitor_latency_degraded_ms:g} "
                f"is above EFSRAY_MONITOR_LATENCY_FAILING_MS="
                f"{self.efsray_monitor_latency_failing_ms:g}; degraded must be <= failing"
            )
        if self.efsray_monitor_free_failing_percent > self.efsray_monitor_free_degraded_percent:
            raise ValueError(
                "EFSRAY_MONITOR_FREE_FAILING_PERCENT="
                f"{self.efsray_monitor_free_failing_percent:g} is above "
                "EFSRAY_MONITOR_FREE_DEGRADED_PERCENT="
                f"{self.efsray_monitor_free_degraded_percent:g}; failing must be <= degraded"
            )
        return self

    @property
    def monitor_mount_paths(self) -> tuple[Path, ...]:
        """The paths `efsray monitor` watches: EFSRAY_MONITOR_MOUNT_PATHS, else EFS_MOUNT_PATH."""
        if not self.efsray_monitor_mount_paths:
            return (self.efs_mount_path,)
        return tuple(
            Path(p.strip()) for p in self.efsray_monitor_mount_paths.split(",") if p.strip()
        )

    @property
    def store_root(self) -> Path:
        """The store's root directory (EFS_MOUNT_PATH)."""
        return self.efs_mount_path

    def describe(self) -> dict[str, Any]:
        """Every setting by its environment variable name, secrets masked, JSON-safe."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                value = mask_dsn(secret) if name == "neon_connection_string" else "***"
            elif value is not None and not isinstance(value, int | float | bool | str):
                value = str(value)
            out[name.upper()] = value
        return out


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str | int) -> int:
    """Bytes from ``4096``, ``"64K"``, ``"32M"``, ``"1GiB"`` (binary multiples).

    >>> parse_size("32M")
    33554432
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"size {value} is negative; give a number of bytes >= 0")
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(
            f"{value!r} is not a size; give bytes (4096) or a number with K, M, G or T "
            "(binary multiples: 32M = 33554432)"
        )
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


_SECRET_FIELDS = {"neon_connection_string", "ray_auth_token"}


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from the environment (and ``env_file`` if given).

    Raises :class:`ConfigError` naming every bad variable, its value (masked when secret)
    and what to set instead. ``overrides`` take precedence over both sources.
    """
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            raise ConfigError(
                f"env file {str(path)!r} does not exist or is not a file; "
                "pass an existing file to --env-file (see deploy/.env.cloud.example)"
            )
        _check_env_file(path)
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except pydantic.ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _check_env_file(path: Path) -> None:
    """Fail with a ConfigError (not a UnicodeDecodeError) on an unreadable or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"env file {str(path)!r} cannot be read: {exc.strerror or exc}; check its permissions"
        ) from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"env file {str(path)!r} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _explain(exc: pydantic.ValidationError) -> str:
    lines = [explain_setting_error(err, err.get("input")) for err in exc.errors()]
    return "invalid settings:\n  " + "\n  ".join(lines)


def explain_setting_error(err: ErrorDetails, value: Any) -> str:
    """One validation error as ``VAR='value': message``, the value masked when secret; an
    error of the settings as a whole (no field) is its message alone."""
    loc = err.get("loc") or ()
    field = str(loc[0]) if loc else ""
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if not field:
        return msg
    if field in _SECRET_FIELDS and value is not None:
        value = mask_dsn(str(value)) if field == "neon_connection_string" else "***"
    return f"{field.upper()}={value!r}: {msg}"

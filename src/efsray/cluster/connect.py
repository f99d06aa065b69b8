"""Connect to Ray: a cluster named by settings or ``--address``, else a private local Ray.

``connect()`` is a context manager. It checks the address first (see
:mod:`efsray.cluster.address`), probes ``HOST:PORT`` over TCP with a short deadline (Ray's own
``ray.init`` waits minutes on a dead address before failing), passes the token-authentication
settings to Ray through the environment it reads (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH``), and turns Ray's failures into :class:`ClusterError` messages that
say what to check.

The embedded default (no address) starts Ray in this process. Ray's gRPC ports listen on every
interface of the host whatever address it advertises, so the local instance is protected
with token authentication: unless the settings choose otherwise, ``connect()`` generates a
random token for the session and hands it to Ray in the environment (never on disk, never in
``~/.ray``), so it works the same whatever ``HOME`` is.

When Ray is already initialized in this process (inside a Ray job, a notebook, or a test
session that shares one cluster), ``connect()`` reuses that connection and leaves it open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tenacity

from efsray.cluster.address import RayAddress, parse_ray_address
from efsray.config import Settings
from efsray.errors import ClusterError

__all__ = ["ClusterInfo", "auth_environment", "cluster_info", "connect", "probe_tcp"]

log = logging.getLogger("efsray.cluster")

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What ``connect()`` connected to."""

    mode: Literal["local", "cluster", "client"]
    address: str
    nodes: int
    cpus: float
    auth: str
    reused: bool


def auth_environment(settings: Settings, *, local: bool) -> dict[str, str]:
    """The ``RAY_AUTH_*`` variables Ray must see for these settings.

    A token or token file without a mode implies ``RAY_AUTH_MODE=token``. A token file must
    exist and be readable. For a new local instance with no auth settings at all, a random
    per-session token is generated.
    """
    mode = settings.ray_auth_mode
    token = settings.ray_auth_token.get_secret_value() if settings.ray_auth_token else None
    path = settings.ray_auth_token_path
    env: dict[str, str] = {}
    if token is not None:
        if not token.strip() or any(c.isspace() for c in token):
            raise ClusterError(
                "RAY_AUTH_TOKEN is empty or contains whitespace; set it to the cluster's token "
                "(`ray get-auth-token` on the head prints it)"
            )
        env["RAY_AUTH_TOKEN"] = token
    if path is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(_check_token_file(Path(path)))
    if mode is None and (token is not None or path is not None):
        mode = "token"
    if mode is None and local:
        mode = "token"
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    if mode == "token" and token is None and path is None and not local:
        default = Path.home() / ".ray" / "auth_token"
        if not default.is_file():
            raise ClusterError(
                "RAY_AUTH_MODE=token but no token is configured: set RAY_AUTH_TOKEN, or "
                f"RAY_AUTH_TOKEN_PATH to a file holding it (Ray's fallback {default} does "
                "not exist). `ray get-auth-token` on the head node prints the cluster's token"
            )
    if mode is not None:
        env["RAY_AUTH_MODE"] = mode
    return env


def _check_token_file(path: Path) -> Path:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={str(path)!r} is not a regular file")
        content = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ClusterError(
            f"RAY_AUTH_TOKEN_PATH={str(path)!r} does not exist; point it at the file holding "
            "the cluster's token (or set RAY_AUTH_TOKEN)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterError(f"RAY_AUTH_TOKEN_PATH={str(path)!r} cannot be read: {exc}") from None
    if not content:
        raise ClusterError(f"RAY_AUTH_TOKEN_PATH={str(path)!r} is empty; it must hold the token")
    if st.st_mode & 0o077:
        log.warning(
            "token file %s is readable by other users (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(st.st_mode),
        )
    return path.resolve()


def probe_tcp(host: str, port: int, *, timeout: float = 5.0) -> None:
    """Raise ClusterError unless something accepts a TCP connection at ``host:port``."""
    what = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ClusterError(
            f"cannot resolve the Ray head {host!r} ({exc.strerror}); check RAY_ADDRESS / "
            "--address and DNS"
        ) from None
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(sockaddr)
                return
            except OSError as exc:
                last = exc
    if isinstance(last, TimeoutError | socket.timeout):
        reason = f"no answer within {timeout:g} s (a firewall or security group dropping it?)"
    elif isinstance(last, ConnectionRefusedError):
        reason = "connection refused: nothing listens there (is the head up? right port?)"
    else:
        reason = str(last)
    raise ClusterError(
        f"cannot reach the Ray cluster at {what}: {reason}. Start the head with "
        "`ray start --head --port=6379`, or unset RAY_ADDRESS to use a local Ray"
    )


@contextlib.contextmanager
def _auth_environment(updates: Mapping[str, str]) -> Iterator[None]:
    """Set the ``RAY_AUTH_*`` variables for the block (others cleared), then restore them.

    Ray caches its configuration (the auth mode) when it is imported and the token when first
    used, so both are refreshed after every change, as Ray's own test utilities do.
    """
    saved = {k: os.environ.get(k) for k in AUTH_VARS}
    for key in AUTH_VARS:
        os.environ.pop(key, None)
    os.environ.update(updates)
    _refresh_ray_auth()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_ray_auth()


@contextlib.contextmanager
def _local_code_path(local: bool) -> Iterator[None]:
    """A local Ray's workers import the efsray this driver runs (a source checkout too):
    its processes inherit PYTHONPATH from us when Ray starts them."""
    if not local:
        yield
        return
    package_parent = str(Path(__file__).resolve().parents[2])
    saved = os.environ.get("PYTHONPATH")
    parts = [package_parent, *(saved.split(os.pathsep) if saved else [])]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in parts if p))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _refresh_ray_auth() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def cluster_info(*, reused: bool, mode: str | None = None) -> ClusterInfo:
    """Describe the Ray this process is connected to (nodes alive, CPUs, auth mode)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    ctx = ray.get_runtime_context()
    gcs = getattr(ctx, "gcs_address", None) or ""
    if mode is None:
        mode = "client" if ray.util.client.ray.is_connected() else "cluster"
    auth = os.environ.get("RAY_AUTH_MODE") or "default"
    return ClusterInfo(
        mode=mode,  # type: ignore[arg-type]
        address=gcs,
        nodes=len(nodes),
        cpus=cpus,
        auth=auth,
        reused=reused,
    )


@contextlib.contextmanager
def connect(
    settings: Settings | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    probe_timeout: float = 5.0,
    ray_init_kwargs: Mapping[str, Any] | None = None,
) -> Iterator[ClusterInfo]:
    """Connect to Ray for the duration of the ``with`` block.

    ``address`` (e.g. from ``--address``) wins over ``settings.ray_address``
    (``RAY_ADDRESS``); neither means a new local Ray in this process with ``num_cpus`` CPUs
    (default: all). Yields a :class:`ClusterInfo`. On exit, a connection made here is shut
    down and the environment restored; a connection that existed before is left alone.
    """
    import ray

    settings = settings or Settings()
    target = parse_ray_address(address if address is not None else settings.ray_address)

    if ray.is_initialized():
        _check_reuse(target)
        log.info("Ray is already initialized in this process; reusing that connection")
        yield cluster_info(reused=True)
        return

    if target.kind in ("gcs", "client") and target.host is not None and target.port is not None:
        probe_tcp(target.host, target.port, timeout=probe_timeout)
    if num_cpus is not None and not target.is_local:
        raise ClusterError(
            "num_cpus only applies to a local Ray; a cluster's CPUs are set by `ray start`"
        )
    env = auth_environment(settings, local=target.is_local)
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if target.is_local:
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    kwargs.update(ray_init_kwargs or {})

    with _auth_environment(env), _local_code_path(target.is_local):
        _init(ray, target, kwargs)
        try:
            mode = "local" if target.is_local else target.kind.replace("gcs", "cluster")
            info = cluster_info(reused=False, mode=mode)
            log.info("connected to Ray (%s, %d nodes, %g CPUs)", mode, info.nodes, info.cpus)
            yield info
        finally:
            ray.shutdown()


def _init(ray: Any, target: RayAddress, kwargs: dict[str, Any]) -> None:
    from ray.exceptions import AuthenticationError

    where = "a local Ray" if target.is_local else f"the Ray cluster at {target}"
    try:
        _init_with_retry(ray, target, kwargs)
    except AuthenticationError as exc:
        raise ClusterError(
            f"{where} refused us: {_first_line(exc)}. The cluster uses token authentication: "
            "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
            "head's token (`ray get-auth-token` on the head prints it)"
        ) from None
    except ConnectionError as exc:
        if target.kind == "auto":
            hint = "no `ray start` cluster runs on this machine; start one or pass --address"
        elif target.kind == "gcs":
            # The TCP probe passed: something listens there, but Ray would not talk to us.
            hint = (
                "the port answers, so the usual causes are token authentication (set "
                "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the head's "
                "token; `ray get-auth-token` on the head prints it) or a port that is not the "
                "head's GCS port (6379 by default)"
            )
        else:
            hint = (
                "check that the head runs the Ray Client server (port 10001) and, if the "
                "cluster uses token authentication, that RAY_AUTH_TOKEN is set"
            )
        raise ClusterError(f"cannot connect to {where}: {_first_line(exc)}; {hint}") from None
    except (RuntimeError, ValueError, OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot start or join {where}: {_first_line(exc)}") from None


# A loaded head can be slow to start the per-client server behind its Ray Client port; the
# proxier then reports an initialization failure that a second attempt does not meet.
_CLIENT_ATTEMPTS = 3
_TRANSIENT_CLIENT = ("Initialization failure from server", "timed out", "Timeout")


def _init_with_retry(ray: Any, target: RayAddress, kwargs: dict[str, Any]) -> None:
    def transient(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError) and any(t in str(exc) for t in _TRANSIENT_CLIENT)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "Ray Client connection to %s failed (%s); retrying (%d/%d)",
            target, _first_line(error) if error else "?", state.attempt_number + 1, attempts,
        )  # fmt: skip
        ray.shutdown()

    attempts = _CLIENT_ATTEMPTS if target.kind == "client" else 1
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_incrementing(start=2.0, increment=2.0),  # 2 s, then 4 s
        retry=tenacity.retry_if_exception(transient),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            ray.init(address=str(target), **kwargs)


def _first_line(exc: BaseException) -> str:
    """The gist of Ray's message: its first non-empty lines, joined, at most 400 characters
    (Ray often puts the reason on the line after "...failure from server:")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:3]) or type(exc).__name__
    return text[:400]


def _check_reuse(target: RayAddress) -> None:
    """An explicit GCS address must match the connection we would reuse."""
    if target.kind != "gcs":
        return
    import ray

    current = getattr(ray.get_runtime_context(), "gcs_address", None)
    if current and current.rsplit(":", 1)[-1] != str(target.port):
        raise ClusterError(
            f"this process is already connected to Ray at {current}, not {target}; "
            "one process can only talk to one Ray cluster"
        )

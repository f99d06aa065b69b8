"""Is the file system reachable? DNS resolution with a deadline, and a TCP connect to NFS.

Resolution goes through the C resolver (``socket.getaddrinfo``), the same path mount(8) and
Docker take, not through a spawned ``nslookup``. ``getaddrinfo`` cannot be cancelled, so it
runs in a daemon thread and we stop waiting at the deadline; the thread ends on its own when
the resolver gives up (a few seconds, per resolv.conf) and never keeps the process alive.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from efsray.errors import DeadlineExceeded, MountError
from efsray.mount.options import NFS_PORT

__all__ = ["Availability", "Resolver", "check_availability", "resolve_host"]

Resolver = Callable[..., list[tuple[Any, ...]]]
"""Anything with ``socket.getaddrinfo``'s signature and return value."""


@dataclass(frozen=True, slots=True)
class Availability:
    """What :func:`check_availability` found. ``error`` is None when everything checked passed.

    ``reachable`` is None when no TCP connect was attempted.
    """

    host: str
    addresses: tuple[str, ...]
    resolve_ms: float | None
    port: int | None
    reachable: bool | None
    connect_ms: float | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def resolve_host(
    host: str,
    *,
    timeout: float = 5.0,
    port: int = NFS_PORT,
    resolver: Resolver = socket.getaddrinfo,
) -> tuple[str, ...]:
    """The addresses ``host`` resolves to (TCP), in resolver order, without duplicates.

    Raises :class:`DeadlineExceeded` after ``timeout`` seconds and :class:`MountError` when the
    name does not resolve.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["infos"] = resolver(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # socket.gaierror is an OSError
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"efsray-resolve-{host}", daemon=True).start()
    if not done.wait(timeout):
        raise DeadlineExceeded(
            f"DNS lookup of {host!r} did not answer within {timeout:g} s; check the resolver "
            "(/etc/resolv.conf; in a VPC, enableDnsSupport and enableDnsHostnames) or set "
            "EFS_MOUNT_TARGET_IP to mount by IP"
        )
    if "error" in outcome:
        exc = outcome["error"]
        raise MountError(
            f"DNS name {host!r} does not resolve: {exc}. EFS DNS names resolve only inside "
            "the file system's VPC (with DNS support and hostnames enabled) and only in an "
            "availability zone that has a mount target; check the name, or set "
            "EFS_MOUNT_TARGET_IP"
        )
    addresses: dict[str, None] = {}
    for info in outcome.get("infos") or ():
        addresses[str(info[4][0])] = None
    if not addresses:
        raise MountError(f"DNS name {host!r} resolved to no address; check the name")
    return tuple(addresses)


def check_availability(
    host: str,
    *,
    dns_timeout: float = 5.0,
    port: int | None = None,
    connect_timeout: float = 3.0,
    resolver: Resolver = socket.getaddrinfo,
) -> Availability:
    """Resolve ``host`` and, when ``port`` is given (EFS: 2049), open and close a TCP
    connection to it. Never raises for an unreachable server: the reason is in ``error``."""
    started = time.perf_counter()
    try:
        addresses = resolve_host(
            host, timeout=dns_timeout, port=port or NFS_PORT, resolver=resolver
        )
    except (MountError, DeadlineExceeded) as exc:
        return Availability(host, (), None, port, None, None, str(exc))
    resolve_ms = (time.perf_counter() - started) * 1000
    if port is None:
        return Availability(host, addresses, resolve_ms, None, None, None, None)
    failures = []
    for address in addresses:
        t0 = time.perf_counter()
        try:
            with socket.create_connection((address, port), timeout=connect_timeout):
                pass
        except TimeoutError:
            failures.append(f"{address}:{port} did not answer within {connect_timeout:g} s")
        except OSError as exc:
            failures.append(f"{address}:{port}: {exc.strerror or exc}")
        else:
            connect_ms = (time.perf_counter() - t0) * 1000
            return Availability(host, addresses, resolve_ms, port, True, connect_ms, None)
    return Availability(
        host,
        addresses,
        resolve_ms,
        port,
        False,
        None,
        f"no NFS server reachable for {host!r}: {'; '.join(failures)}. The mount target's "
        f"security group must allow inbound TCP {port} from this host",
    )

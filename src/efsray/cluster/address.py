"""Ray addresses: what the user wrote, checked before Ray ever sees it.

Ray accepts four kinds of address, and confusing them is the most common deployment mistake:

- unset or ``local``: start a private Ray inside this process (the embedded default);
- ``auto``: join the cluster that ``ray start`` started on this machine;
- ``HOST:PORT``: join a cluster through its head's GCS port (6379 by default); drivers and
  ``ray start --address`` on worker nodes use this;
- ``ray://HOST:PORT``: a remote Ray Client connection to the head's client server (10001).

Pointing a GCS address at 10001, a client address at 6379, or either at the dashboard
(8265) fails inside Ray after a long timeout with an obscure gRPC error, so those
combinations are refused here with a message that says which port to use.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from efsray.config import is_hostname
from efsray.errors import ClusterError

__all__ = [
    "DASHBOARD_PORT",
    "GCS_PORT",
    "RAY_CLIENT_PORT",
    "RayAddress",
    "parse_ray_address",
]

GCS_PORT = 6379
RAY_CLIENT_PORT = 10001
DASHBOARD_PORT = 8265

Kind = Literal["local", "auto", "gcs", "client"]


@dataclass(frozen=True, slots=True)
class RayAddress:
    """A checked Ray address. ``str(address)`` is what ``ray.init`` receives."""

    kind: Kind
    host: str | None = None
    port: int | None = None

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @property
    def hostport(self) -> str:
        if self.host is None or self.port is None:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.kind in ("local", "auto"):
            return self.kind
        if self.kind == "client":
            return f"ray://{self.hostport}"
        return self.hostport


def parse_ray_address(value: str | None) -> RayAddress:
    """Check ``value`` (``RAY_ADDRESS`` or ``--address``); raise :class:`ClusterError`."""
    if value is None:
        return RayAddress("local")
    if not isinstance(value, str):
        raise ClusterError(f"Ray address must be a string, got {value!r}")
    text = value.strip()
    if text in ("", "local"):
        return RayAddress("local")
    if text == "auto":
        return RayAddress("auto")
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme == "ray":
            host, port = _host_port(rest, text, default_port=RAY_CLIENT_PORT)
            if port == GCS_PORT:
                raise ClusterError(
                    f"Ray address {text!r} points the Ray Client at {GCS_PORT}, the GCS port. "
                    f"The client server listens on {RAY_CLIENT_PORT}: use ray://{host}:"
                    f"{RAY_CLIENT_PORT}, or join the GCS directly with {host}:{GCS_PORT} "
                    "(no ray://) from inside the cluster's network"
                )
            _refuse_dashboard(port, text, host)
            return RayAddress("client", host, port)
        if scheme in ("http", "https"):
            raise ClusterError(
                f"Ray address {text!r} is a web URL (the dashboard / Jobs API, port "
                f"{DASHBOARD_PORT}); efsray needs the GCS address HOST:{GCS_PORT} or the client "
                f"address ray://HOST:{RAY_CLIENT_PORT}"
            )
        raise ClusterError(
            f"Ray address {text!r} has scheme {scheme!r}; use HOST:{GCS_PORT}, "
            f"ray://HOST:{RAY_CLIENT_PORT}, 'auto' or 'local'"
        )
    host, port = _host_port(text, text, default_port=None)
    if port == RAY_CLIENT_PORT:
        raise ClusterError(
            f"Ray address {text!r} points at {RAY_CLIENT_PORT}, the Ray Client port; joining "
            f"a cluster (a driver, or `ray start --address` on a worker node) uses the GCS "
            f"port: {host}:{GCS_PORT}. For a remote client use ray://{host}:{RAY_CLIENT_PORT}"
        )
    _refuse_dashboard(port, text, host)
    return RayAddress("gcs", host, port)


def _refuse_dashboard(port: int, text: str, host: str) -> None:
    if port == DASHBOARD_PORT:
        raise ClusterError(
            f"Ray address {text!r} points at {DASHBOARD_PORT}, the dashboard / Jobs API port; "
            f"use {host}:{GCS_PORT} (GCS) or ray://{host}:{RAY_CLIENT_PORT} (client)"
        )


def _host_port(rest: str, text: str, *, default_port: int | None) -> tuple[str, int]:
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket:
            raise ClusterError(f"Ray address {text!r} has an unclosed '[' around an IPv6 host")
        if after and not after.startswith(":"):
            raise ClusterError(f"Ray address {text!r}: expected ':PORT' after ']'")
        port_text = after[1:] if after else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ClusterError(
                f"Ray address {text!r}: {host!r} in brackets is not an IPv6 address"
            ) from None
    else:
        if rest.count(":") > 1:
            raise ClusterError(
                f"Ray address {text!r}: write an IPv6 host in brackets, e.g. [::1]:{GCS_PORT}"
            )
        host, colon, port_text = rest.partition(":")
        if colon and not port_text:
            raise ClusterError(f"Ray address {text!r} ends with ':'; add the port number")
        if "/" in host or not is_hostname(host):
            raise ClusterError(
                f"Ray address {text!r}: {host!r} is not a host name or IP address; "
                f"write HOST:{GCS_PORT} or ray://HOST:{RAY_CLIENT_PORT}"
            )
    if not port_text:
        if default_port is None:
            raise ClusterError(
                f"Ray address {text!r} has no port; the head's GCS port is usually {GCS_PORT}: "
                f"{rest}:{GCS_PORT}"
            )
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ClusterError(
            f"Ray address {text!r}: port {port_text!r} is not a number from 1 to 65535"
        )
    return host, int(port_text)

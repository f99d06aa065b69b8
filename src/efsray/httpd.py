"""The one HTTP server of efsray's services: ``/metrics`` and ``/healthz``.

The monitor (``efsray monitor``) and the sync service (``efsray sync``) both serve Prometheus
metrics and a JSON health document. ``/metrics`` is prometheus_client's own WSGI exposition
(content negotiation: text or OpenMetrics, gzip); the server is the standard library's
``wsgiref`` with a thread per request, as ``prometheus_client.start_http_server`` runs it, so
a slow scrape never blocks ``/healthz``. No request is logged above DEBUG.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from efsray.errors import ConfigError

__all__ = ["HealthFn", "ServiceHTTPServer"]

log = logging.getLogger("efsray.httpd")

HealthFn = Callable[[], tuple[int, dict[str, Any]]]
"""Returns (HTTP status, JSON body) of ``/healthz``: 200 when healthy, else 503."""

_STATUS = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}


class ServiceHTTPServer:
    """``GET /metrics`` from ``registry``, ``GET /healthz`` (and ``/health``) from ``health``.

    ``port=0`` binds a free port; read :attr:`port` after :meth:`start`. A context manager,
    or :meth:`start` then :meth:`stop`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthFn,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "efsray",
    ) -> None:
        self.registry = registry
        self.health = health
        self.host = host
        self.requested_port = port
        self.name = name
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"the {self.name} HTTP server is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ServiceHTTPServer:
        if self._httpd is not None:
            return self
        server_class = _server_class(self.host)
        try:
            self._httpd = make_server(
                self.host, self.requested_port, self._app(),
                server_class=server_class, handler_class=_QuietHandler,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(
                f"cannot serve {self.name} on {self.host}:{self.requested_port}: "
                f"{exc.strerror or exc}; choose another --port or stop what holds it"
            ) from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"{self.name}-http",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics and /healthz on %s", self.url)
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ServiceHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _app(self) -> Callable[..., Iterable[bytes]]:
        metrics_app = make_wsgi_app(self.registry)
        name = self.name

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path in ("/healthz", "/health"):
                code, body = self.health()
                return _reply(start_response, code, "application/json",
                              json.dumps(body, indent=2).encode() + b"\n")  # fmt: skip
            if path == "/":
                page = f"{name}: /metrics (Prometheus), /healthz (JSON)\n".encode()
                return _reply(start_response, 200, "text/plain; charset=utf-8", page)
            return _reply(start_response, 404, "text/plain; charset=utf-8",
                          b"not found: try /metrics or /healthz\n")  # fmt: skip

        return app


def _reply(start_response: Callable[..., Any], code: int, ctype: str, body: bytes) -> list[bytes]:
    start_response(
        _STATUS.get(code, f"{code} Status"),
        [("Content-Type", ctype), ("Content-Length", str(len(body)))],
    )
    return [body]


def _server_class(host: str) -> type[WSGIServer]:
    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return _Server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

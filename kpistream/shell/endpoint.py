"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

``/healthz`` answers 200 while the consume loop turns (503 when it has not polled for
``STALL_S``: a stuck worker, to be restarted); ``/readyz`` answers 200 when every readiness
check holds — rules loaded, broker answering, partitions assigned and restored, the merge stage
taken over if it is this worker's — and 503 otherwise, with the checks as JSON either way,
e.g. ``{"ready": false, "checks": {"rules_loaded": true, "broker_connected": false,
"partitions_assigned": true, "merge_stage": true}}``. Any other path serves metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["Health", "make_app", "serve"]


class Health(Protocol):
    """What the endpoint asks the running daemon."""

    def alive(self) -> bool: ...

    def readiness(self) -> dict[str, bool]: ...


def make_app(registry: CollectorRegistry, health: Callable[[], Health | None]) -> Callable:
    """A WSGI app: the two probes, and metrics on every other path.

    ``health()`` gives the daemon's health, or None before it exists (then: alive, not ready).
    """
    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)
        current = health()
        if path == "/healthz":
            ok = current is None or current.alive()
            body = {"alive": ok}
        else:
            checks = {} if current is None else current.readiness()
            ok = bool(checks) and all(checks.values())
            body = {"ready": ok, "checks": checks}
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json")])
        return [orjson.dumps(body)]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes and probes are not worth a log line each."""


def serve(host: str, port: int, app: Callable) -> ThreadingWSGIServer:
    """Serve ``app`` on ``host:port`` from a daemon thread; ``shutdown()`` stops it."""
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True, name="http").start()
    return server

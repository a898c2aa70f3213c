"""The embedded local endpoint: a moto server (Kinesis, DynamoDB, S3, Cognito) on loopback.

moto's own threaded server loses records when PutRecords calls overlap (its shard append
is not thread-safe), so it is served here from a single-threaded WSGI server: requests are
handled one at a time, in arrival order. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["local_endpoint", "make_server", "serve_forever"]

log = logging.getLogger("shardflow.local")

LOOPBACK = "127.0.0.1"


def make_server(port: int = 0, host: str = LOOPBACK) -> Any:
    """A single-threaded werkzeug server running moto's dispatcher (not yet serving).

    Raises ImportError with an install hint when moto[server] is missing.
    """
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server as werkzeug_make_server
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the local endpoint needs moto's server: pip install 'moto[server]'"
        ) from exc
    class QuietHandler(MotoRequestHandler):
        """Per-request lines go to shardflow.local at DEBUG, not werkzeug's stderr log."""

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            log.debug("%s %s %s", self.command, self.path, code)

    app = DomainDispatcherApplication(create_backend_app)
    return werkzeug_make_server(host, port, app, threaded=False, request_handler=QuietHandler)


def _url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@contextmanager
def local_endpoint(port: int = 0) -> Iterator[str]:
    """Serve moto on 127.0.0.1 in a background thread; yield its URL.

    ``port=0`` picks a free port. The server stops, and its state is dropped, when the
    block exits. Clients created by shardflow for a loopback endpoint sign with dummy
    credentials when none are configured.
    """
    server = make_server(port)
    thread = threading.Thread(
        target=server.serve_forever, name="shardflow-local-endpoint", daemon=True
    )
    thread.start()
    url = _url(server)
    log.debug("local endpoint serving on %s", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def serve_forever(port: int = 0, announce: Any = print) -> None:
    """Serve moto on 127.0.0.1 in the foreground until interrupted (``shardflow local``).

    ``announce`` receives the URL once the socket is bound.
    """
    server = make_server(port)
    announce(_url(server))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

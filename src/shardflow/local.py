"""The embedded local endpoint: a moto server (Kinesis, DynamoDB, S3, Cognito) on loopback.

moto's own threaded server loses records when PutRecords calls overlap (its shard append
is not thread-safe), so it is served here from a single-threaded WSGI server: requests are
handled one at a time, in arrival order. It binds 127.0.0.1 only. A request that is not
HTTP (garbage, or a TLS handshake from an ``https://`` URL) gets a 400 and one log line.

It needs the ``local`` extra: ``pip install 'shardflow[local]'``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import MissingDependency

__all__ = ["local_endpoint", "make_server", "serve_forever"]

log = logging.getLogger("shardflow.local")

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "pip install 'shardflow[local]'"
IDLE_TIMEOUT = 60.0
"""Seconds a connection may send nothing before it is dropped (one request at a time is
served, so a silent client must not hold the server for ever)."""

_TLS_HANDSHAKE = b"\x16\x03"
_TLS_ANSWER = b"this is a plain HTTP endpoint: use http://, not https://\n"


def make_server(port: int = 0, host: str = LOOPBACK) -> Any:
    """A single-threaded werkzeug server running moto's dispatcher (not yet serving).

    Raises :class:`errors.MissingDependency` (an ImportError) naming the extra to install
    when moto's server is missing.
    """
    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server as werkzeug_make_server
    except ImportError as exc:
        missing = f" ({exc.name} is not installed)" if exc.name else ""
        raise MissingDependency(
            f"the local endpoint needs the moto server{missing}: {INSTALL_HINT}"
        ) from exc

    class QuietHandler(MotoRequestHandler):
        """Per-request lines go to shardflow.local at DEBUG, not werkzeug's stderr log; a
        request that is not HTTP gets a 400 and one WARNING line."""

        timeout = IDLE_TIMEOUT
        default_request_version = "HTTP/1.0"  # a 400 for garbage gets a status line too

        def handle(self) -> None:
            try:
                first = self.connection.recv(len(_TLS_HANDSHAKE), socket.MSG_PEEK)
            except OSError:
                return
            if first == _TLS_HANDSHAKE:
                log.warning(
                    "rejected a TLS connection from %s: the local endpoint speaks plain "
                    "HTTP (use http://, not https://)",
                    self.client_address[0],
                )
                self.wfile.write(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(_TLS_ANSWER), _TLS_ANSWER)
                )
                return
            super().handle()

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            command = getattr(self, "command", None) or "-"
            path = getattr(self, "path", None) or "-"
            log.debug("%s %s %s", command, path, code)

        def log_error(self, format: str, *args: Any) -> None:
            text = (format % args)[:200]
            log.warning("rejected a request from %s: %s", self.client_address[0], text)

    _check_free(host, port)
    app = DomainDispatcherApplication(create_backend_app)
    return werkzeug_make_server(host, port, app, threaded=False, request_handler=QuietHandler)


def _check_free(host: str, port: int) -> None:
    """Raise OSError(EADDRINUSE) for a port in use (werkzeug would print two lines of its
    own and exit the process)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@contextmanager
def local_endpoint(port: int = 0) -> Iterator[str]:
    """Serve a local Kinesis, DynamoDB, S3 and Cognito (moto) on 127.0.0.1 in a
    background thread; yield its URL, to pass as ``endpoint_url``::

        with local_endpoint() as url:
            asyncio.run(main(url))

    ``port=0`` picks a free port. The server stops, and its state is dropped, when the
    block exits. Clients created by shardflow for a loopback endpoint sign with dummy
    credentials when none are configured. Raises :class:`errors.MissingDependency` (an
    ImportError) without the ``local`` extra (``pip install 'shardflow[local]'``).
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

"""Running the coordinator: uvicorn on a socket we bind ourselves, in a background thread.

Binding the socket here (127.0.0.1 by default, port 0 for a free one) lets a test or the demo
learn the port before any client starts, and keeps every server on loopback unless asked.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from typing import Any

import uvicorn

from privml._exceptions import PrivmlError

__all__ = ["ServerThread"]


class ServerThread:
    """A uvicorn server for ``app`` over TLS in a daemon thread; ``stop()`` ends it."""

    def __init__(self, app: Any, *, ssl_context: ssl.SSLContext, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        from privml.transport._uvicorn_tls import make_uvicorn_config

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = make_uvicorn_config(app, host=host, port=self.port, ssl_context=ssl_context,
                                     log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"privml-server-{self.port}",
                                       daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # surfaced by start()/stop()
            self.error = exc

    def start(self, *, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise PrivmlError(f"server failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise PrivmlError("server did not start in time")
            time.sleep(0.02)
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

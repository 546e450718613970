"""A TCP proxy to PostgreSQL that a test cuts and restores: an outage the product's processes
(gunicorn, db_worker) really see, without restarting them."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class DatabaseProxy:
    """A TCP proxy to PostgreSQL that the test can cut and restore.

    Each accepted connection is piped both ways to the real server by two threads. `cut()`
    closes every piped connection at once (a server that went away) and from then on closes
    each new connection as soon as it is accepted (a server that is not there); `restore()`
    pipes new connections again.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.accepting = True
        self.stopped = False
        self.lock = threading.Lock()
        self.pipes: set[tuple[socket.socket, socket.socket]] = set()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def live(self) -> int:
        """Connections being piped now (a server process's pooled connection is one)."""
        with self.lock:
            return len(self.pipes)

    def cut(self) -> None:
        with self.lock:
            self.accepting = False
            pipes, self.pipes = self.pipes, set()
        for pair in pipes:
            self._close(*pair)

    def restore(self) -> None:
        with self.lock:
            self.accepting = True

    def stop(self) -> None:
        self.stopped = True
        self.cut()
        self.thread.join(timeout=5)
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                accepting = self.accepting
            if not accepting:
                self._close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._close(client)
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            with self.lock:
                self.pipes.add(pair)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair: tuple) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self.lock:
            self.pipes.discard(pair)
        self._close(*pair)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def through_proxy(url: str, port: int) -> str:
    """`url` (a database URL) pointed at the proxy's port on 127.0.0.1 instead."""
    parts = urlsplit(url)
    # The proxy listens on this machine, whichever host the database itself is on.
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))

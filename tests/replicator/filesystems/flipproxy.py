"""A TCP proxy on loopback that damages request bodies on the way to a server (tests only).

Every byte stream from a client to the server is scanned for a run of 16 ``0xAA`` bytes (a
pattern no HTTP header or JSON resource contains); the first byte of such a run is flipped,
at most ``flips`` times over the proxy's life. Nothing else is changed.
"""

from __future__ import annotations

import contextlib
import socket
import threading

PATTERN = b"\xaa" * 16


class FlipProxy:
    def __init__(self, upstream_port: int, flips: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.left = flips
        self.flipped = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _damage(self, data: bytes) -> bytes:
        at = data.find(PATTERN)
        if at < 0:
            return data
        with self._lock:
            if self.left <= 0:
                return data
            self.left -= 1
            self.flipped += 1
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                client.close()
                continue
            self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, damage: bool) -> None:
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                b.sendall(self._damage(data) if damage else data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.close()

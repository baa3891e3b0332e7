"""An engine that hangs instead of refusing, for tests: a Unix-socket proxy to
a real engine's socket that can be paused.

While paused it accepts connections and reads nothing: a client's request
waits unanswered, as with a dockerd stopped by SIGSTOP, an overloaded engine
or an NFS-backed daemon. On resume it passes on everything it was sent
meanwhile, so the engine carries out requests whose client gave up long ago,
as a real engine that wakes up does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path


class StallableProxy:
    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(512)
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self._closed = True
        self.flowing.set()
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.flowing.wait()  # paused: not even the engine hears of it
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.target)
        except OSError:
            client.close()
            return
        self._sockets += [client, upstream]
        threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self.flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

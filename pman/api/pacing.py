"""How far a client is behind on a response: TCP's own count of the bytes it acknowledged.

granian's RSGI stream transport queues whatever it is given without bound
(``send_bytes`` never waits), so a client that reads slowly, or stops
reading, would have pman read the engine's whole log into memory. The
kernel knows how much of the connection's data the client has acknowledged
(``TCP_INFO``'s ``tcpi_bytes_acked``): a stream's thread waits while more
than :data:`WINDOW` bytes it passed on are not acknowledged yet, which holds
the engine read back as a bounded server-side buffer would.

The connection's socket belongs to the server; it is found once per stream
among this process's file descriptors by its two addresses, and a duplicate
of it is only asked for ``TCP_INFO`` (and, for a response that cannot be
completed, shut down, so that its client sees it incomplete). Linux only;
elsewhere, or on a Unix socket, nothing is paced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import sys
import threading

log = logging.getLogger(__name__)

#: bytes passed on that the client has not acknowledged, at most
WINDOW = 1 << 20
#: how often a waiting stream looks again (seconds)
PERIOD = 0.02
#: tcp_info's tcpi_bytes_acked (Linux >= 4.1: a u64 at this offset)
_BYTES_ACKED = 120
_INFO_SIZE = _BYTES_ACKED + 8


def _address(text: str) -> tuple[str, int] | None:
    """``1.2.3.4:80`` or ``[::1]:80`` (as granian writes them) as (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _same(host: str, other: str) -> bool:
    # an IPv4 client of a dual-stack socket is ::ffff:1.2.3.4 on one side only
    return host == other or host.removeprefix("::ffff:") == other.removeprefix("::ffff:")


class Pacer:
    """One stream's connection, as TCP sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.passed = 0
        self.acked_before = self._acked()

    @classmethod
    def find(cls, server: str, client: str) -> Pacer | None:
        """The connection from ``client`` to ``server`` (RSGI's scope strings),
        or None when it cannot be found or asked."""
        if not sys.platform.startswith("linux"):
            return None
        local, peer = _address(server), _address(client)
        if local is None or peer is None:
            return None
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:
            return None
        for name in names:
            try:
                if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    continue
                sock = socket.socket(fileno=os.dup(int(name)))
            except (OSError, ValueError):
                continue  # closed meanwhile, or not ours to ask
            try:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == (
                    socket.SOCK_STREAM
                ):
                    here, there = sock.getsockname(), sock.getpeername()
                    if (
                        here[1] == local[1]
                        and there[1] == peer[1]
                        and _same(here[0], local[0])
                        and _same(there[0], peer[0])
                    ):
                        return cls(sock)
            except OSError:
                pass  # not connected (a listening socket), or no TCP_INFO
            sock.close()
        return None

    def _acked(self) -> int:
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_SIZE)
        if len(info) < _INFO_SIZE:
            raise OSError("this kernel's TCP_INFO has no tcpi_bytes_acked")
        acked: int = struct.unpack_from("=Q", info, _BYTES_ACKED)[0]
        return acked

    def wait(self, size: int, gone: threading.Event) -> bool:
        """Before passing ``size`` bytes on: wait while the client is more than
        WINDOW behind. False if it left meanwhile."""
        while self.passed - (self._acked() - self.acked_before) > WINDOW:
            if gone.wait(PERIOD):
                return False
        self.passed += size
        return True

    def break_off(self) -> None:
        """End the connection now: its client sees the response incomplete."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()  # the duplicate: the server's own socket stays


_warned = False


def find_pacer(server: str, client: str) -> Pacer | None:
    """The stream's Pacer; None (and a warning, once per process) when its
    connection cannot be asked: its stream is then not paced."""
    global _warned
    pacer = Pacer.find(server, client)
    if pacer is None and not _warned:
        _warned = True
        log.warning(
            "log streams are not paced to their clients here (no TCP connection "
            "found for %s, or no TCP_INFO): a client that reads slowly makes "
            "pman hold what it has not read yet",
            client,
        )
    return pacer

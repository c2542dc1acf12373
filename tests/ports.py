"""Ports for tests: free ones picked by the OS, and closed ones proven closed before use."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing was bound to a moment ago (the OS's pick), for a server the test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def closed_port() -> int:
    """A port proven to refuse connections on 127.0.0.1 and localhost, for a 'server that is not there'."""
    for _ in range(20):
        port = free_port()
        if not is_open(port) and not is_open(port, "localhost"):
            return port
    raise RuntimeError("no closed port found in 20 tries")

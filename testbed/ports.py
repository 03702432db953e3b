"""Ports for servers the testbed and the bench start: the standard library only, so that the
bench's contract-only front (bench/contract_only.py) can use it without loading a client."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def listen_port() -> int:
    """A free port for a server listening on all addresses, outside the ephemeral range.

    A port of the ephemeral range (what binding port 0 hands out) may be taken by any outgoing
    connection meanwhile, and simulated Jibris bind webhook
    clients to ephemeral ports of their own loopback addresses (in TIME_WAIT for a minute
    after), which also block a bind to 0.0.0.0; with many Jibris about (a benchmark next door),
    that happens often. Ports below the range are only ever handed out on request.
    """
    low, high = _ephemeral_ports()
    candidates = [p for p in range(10000, 65536) if not low <= p <= high]
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(candidates)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port outside the ephemeral range")

"""A benchmark publisher: QoS 1 messages over one MQTT 3.1.1 connection, as fast as the broker
takes them, counted as published only once the broker acknowledged them (PUBACK).

paho-mqtt's `publish` costs more Python per message than the ingest spends storing it, so a
paho publisher on the same two cores measures itself; Debian 12's `mosquitto_pub -l` (2.0.11)
sends DISCONNECT at the end of its input while messages are still queued, and the broker drops
them. This one writes pre-encoded PUBLISH packets in large chunks and reads the PUBACKs in bulk.
"""

from __future__ import annotations

import socket
import struct

# Messages unacknowledged at once: far below the 65,535 packet ids, which are reused in turn.
WINDOW = 10_000
CHUNK = 500  # packets per write


def _string(text: bytes) -> bytes:
    return struct.pack("!H", len(text)) + text


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body)) + body


def publish_all(host: str, port: int, username: str, password: str,
                messages: list[tuple[str, bytes]]) -> int:
    """Publish `messages` (topic, payload) with QoS 1; returns how many the broker acknowledged
    (all of them, else it raises)."""
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # clean session, user and password, keepalive off (the run is short and always sending)
        connect = (_string(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 0)
                   + _string(b"") + _string(username.encode()) + _string(password.encode()))
        sock.sendall(_packet(0x10, connect))
        connack = sock.recv(4)
        if connack[:1] != b"\x20" or connack[3:4] != b"\x00":
            raise ConnectionError(f"the broker refused the connection: {connack!r}")
        packets = [_packet(0x32, _string(topic.encode()) + struct.pack("!H", i % 65535 + 1) + payload)
                   for i, (topic, payload) in enumerate(messages)]
        sent = acknowledged = 0
        pending = b""
        while acknowledged < len(packets):
            if sent < len(packets) and sent - acknowledged < WINDOW:
                end = min(sent + CHUNK, len(packets), acknowledged + WINDOW)
                sock.sendall(b"".join(packets[sent:end]))
                sent = end
                sock.setblocking(False)
            else:
                sock.setblocking(True)
            try:
                data = pending + sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError(f"the broker closed the connection after {acknowledged} "
                                      "acknowledgements")
            whole = len(data) - len(data) % 4
            if data[0:whole:4].strip(b"\x40"):
                raise ConnectionError(f"expected only PUBACKs from the broker, got {data[:8]!r}")
            acknowledged += whole // 4
            pending = data[whole:]
        sock.setblocking(True)
        sock.sendall(b"\xe0\x00")  # DISCONNECT, once everything is acknowledged
    return acknowledged

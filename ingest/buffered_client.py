"""A paho-mqtt client that reads its socket in large chunks.

paho reads a packet with several recv calls (its type byte, each byte of its length, its body)
and handles one incoming packet per select: with thousands of small messages a second those
system calls cost more than the messages themselves. This client reads up to 64 KiB at a time
and keeps handling packets while whole or partial packets remain in what it read (paho keeps a
partial packet and resumes it when more bytes come).
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

CHUNK_BYTES = 65536


class BufferedClient(mqtt.Client):
    _chunk = b""
    _position = 0
    _chunk_socket = None  # the connection the chunk came from: a new one starts empty

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._chunk_socket is not self._sock:
            self._chunk, self._position, self._chunk_socket = b"", 0, self._sock
        if self._position >= len(self._chunk):
            data = super()._sock_recv(CHUNK_BYTES)  # raises BlockingIOError when nothing waits
            if not data:
                return data  # the broker closed the connection
            self._chunk, self._position = data, 0
        part = self._chunk[self._position:self._position + bufsize]
        self._position += len(part)
        return part

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # select() cannot see bytes already read: handle them before waiting again.
        while (rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None
               and self._chunk_socket is self._sock and self._position < len(self._chunk)):
            rc = super().loop_read(max_packets)
        return rc

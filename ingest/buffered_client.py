"""A paho-mqtt client that reads and acknowledges in bulk.

paho reads a packet with several recv calls (its type byte, each byte of its length, its body)
and handles one incoming packet per select: with thousands of small messages a second those
system calls cost more than the messages themselves. This client reads up to 64 KiB at a time
and keeps handling packets while whole or partial packets remain in what it read; a packet
wholly in that chunk is cut out of it in one piece, a partial one is left to paho (which keeps
it and resumes it when more bytes come).

paho also queues each manual acknowledgement as a packet of its own and wakes its network
thread for each (a write on its socket pair); `ack_many` queues a batch's PUBACKs as one write.
And for an MQTT 5 PUBLISH paho builds a Properties object even when the packet has none (the
usual case), which costs more than the rest of the packet: such packets are decoded here.
"""

from __future__ import annotations

import struct

import paho.mqtt.client as mqtt

CHUNK_BYTES = 65536
PUBACK_HEADER = b"\x40\x02"  # PUBACK, remaining length 2 (the packet id)


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

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        """A packet wholly in the chunk is taken in one piece and handled by paho; paho reads
        anything else (a packet split between chunks, or the first of a new chunk)."""
        chunk, start = self._chunk, self._position
        if (self._in_packet["command"] != 0 or self._chunk_socket is not self._sock
                or start >= len(chunk)):
            return super()._packet_read()
        length, multiplier, at = 0, 1, start + 1
        while at < len(chunk) and at - start <= 4:  # the remaining length: 1 to 4 bytes
            byte = chunk[at]
            at += 1
            length += (byte & 127) * multiplier
            multiplier *= 128
            if not byte & 128:
                if at + length > len(chunk):
                    break
                self._in_packet.update(command=chunk[start], have_remaining=1,
                                       remaining_length=length, to_process=0, pos=0,
                                       packet=chunk[at:at + length])
                self._position = at + length
                try:
                    rc = self._packet_handle()
                except mqtt.MalformedPacket:
                    rc = mqtt.MQTT_ERR_PROTOCOL
                self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [],
                                   "remaining_mult": 1, "remaining_length": 0,
                                   "packet": bytearray(), "to_process": 0, "pos": 0}
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
                return rc
        return super()._packet_read()

    def ack_many(self, mids: list[int]) -> None:
        """Acknowledge the QoS 1 messages `mids` (manual_ack) with one queued write."""
        if mids:
            packet = b"".join(PUBACK_HEADER + struct.pack("!H", mid) for mid in mids)
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """A QoS 0 or 1 MQTT 5 PUBLISH without properties, decoded without paho's Properties;
        any other PUBLISH goes to paho."""
        command, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (command & 0x06) >> 1
        if self._protocol != mqtt.MQTTv5 or qos > 1 or len(packet) < 3:
            return super()._handle_publish()
        topic_end = 2 + struct.unpack_from("!H", packet)[0]
        properties_at = topic_end + 2 * qos  # after the packet id, present from QoS 1
        if properties_at >= len(packet) or packet[properties_at] != 0:
            return super()._handle_publish()
        message = mqtt.MQTTMessage(struct.unpack_from("!H", packet, topic_end)[0] if qos else 0,
                                   bytes(packet[2:topic_end]))
        message.dup = bool(command & 0x08)
        message.qos = qos
        message.retain = bool(command & 0x01)
        message.payload = bytes(packet[properties_at + 1:])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return mqtt.MQTT_ERR_SUCCESS

"""A QoS 1 publisher that never has more than `window` messages unacknowledged by the broker.

paho-mqtt keeps each unacknowledged QoS 1 message under its packet id (1 to 65535, taken in
turn): when a fast publisher has more than 65,535 messages queued or in flight, the next id is
still in use and paho refuses the message (`publish` returns MQTT_ERR_QUEUE_SIZE, a return
code that is easy to ignore and then loses the message). Blocking `publish` until the broker
acknowledges older messages keeps the ids free, however fast the caller is; any other refusal
is raised.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from wattwatch.errors import WattwatchError

# Far below the 65,535 packet ids; enough to keep a loopback connection busy.
WINDOW = 1000


class Publisher:
    """Publishes through `client` (connected by the caller, its network loop running)."""

    def __init__(self, client: mqtt.Client, window: int = WINDOW):
        if not 1 <= window < 65535:
            raise ValueError(f"window: expected 1 to 65534 messages, got {window!r}")
        self.client = client
        self.window = window
        self._free = threading.Semaphore(window)
        self._pending = 0
        self._settled = threading.Condition()
        self._failure: str | None = None
        client.max_inflight_messages_set(window)
        client.on_publish = self._on_publish

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one QoS 1 message, waiting while `window` are unacknowledged. While the client
        is disconnected paho keeps the message and sends it on reconnection."""
        self._free.acquire()
        if self._failure:
            self._free.release()
            raise WattwatchError(self._failure)
        with self._settled:
            self._pending += 1
        try:
            info = self.client.publish(topic, payload, qos=1)
        except BaseException:
            self._done()
            raise
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._done()
            raise ValueError(f"publish to {topic!r}: {mqtt.error_string(info.rc)}")

    def wait(self, timeout: float | None = None) -> bool:
        """True once the broker has acknowledged every message published so far."""
        with self._settled:
            settled = self._settled.wait_for(lambda: self._pending == 0 or self._failure, timeout)
        if self._failure:
            raise WattwatchError(self._failure)
        return bool(settled)

    def fail(self, reason: str) -> None:
        """Give up: a connection that no retry can make (an untrusted certificate). Whoever
        waits to publish, or for acknowledgements, is given `reason` as an error."""
        with self._settled:
            self._failure = reason
            self._settled.notify_all()
        self._free.release(self.window)  # wakes every publish blocked on a full window

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self._done()

    def _done(self) -> None:
        with self._settled:
            self._pending -= 1
            self._settled.notify_all()
        self._free.release()

"""`wattwatch ingest mqtt`: readings from MQTT topics into `readings`, nothing lost.

The client subscribes with QoS 1 under a fixed client id and a persistent session, and
acknowledges each message only after its rows or rejects are committed: a message the process
had not acknowledged when it was killed, or when the broker or the database went away, is
delivered again and its readings count as duplicates. Messages are batched into the COPY path
of `ingest file` (ingest/batches.py): a batch closes when no message is waiting, when it holds
WATTWATCH_INGEST_BATCH_ROWS rows, or 1 s after its first message, whichever comes first.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

from ingest.batches import BatchLoader
from ingest.broker import Broker, Client, connect_async, untrusted_certificate
from ingest.mqtt_metrics import OUTCOMES, MqttMetrics
from ingest.pacing import FLUSH_SECONDS, Pacer
from ingest.payloads import PayloadParser
from wattwatch import logs
from wattwatch.errors import WattwatchError

log = logs.get("ingest")
# How long the loop waits for a first message before it looks at the stop event again.
IDLE_SECONDS = 0.2


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    arrival: datetime
    mid: int
    qos: int
    dup: bool  # the broker sent it before
    connection: int  # which connection delivered it: only that one can acknowledge it


class MqttIngest:
    """Subscribes `client` (made with manual_ack and a persistent session) to `topics` and
    writes what arrives through `loader` until `stop` is set."""

    def __init__(self, client: Client, broker: Broker, topics: list[str],
                 parser: PayloadParser, loader: BatchLoader, metrics: MqttMetrics | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.client = client
        self.broker = broker
        self.topics = topics
        self.parser = parser
        self.loader = loader
        self.metrics = metrics
        self.clock = clock
        self.inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self.connection = 0  # bumped on each connect, under _ack_lock
        self._ack_lock = threading.Lock()
        self._fatal: str | None = None
        self._lost_at: float | None = None
        self._arrivals: dict[str, float] = {}  # meter -> its last message's arrival, this batch
        self._open = 0  # messages in the batch being parsed or stored
        if metrics:
            metrics.backlog.set_function(lambda: self.inbox.qsize() + self._open)
            # The labelled children, looked up once: they count every message.
            self._counted = {outcome: metrics.messages.labels(outcome)
                             for outcome in OUTCOMES}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message

    def run(self, stop: threading.Event) -> None:
        connect_async(self.client, self.broker, persistent=True)
        self.client.loop_start()
        pacer = Pacer(self.loader)
        try:
            while not stop.is_set():
                if self._fatal:
                    raise WattwatchError(self._fatal)
                batch = self._collect()
                if batch:
                    self._store(batch)
                pacer.tick()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        self.loader.close()
        self.loader.refresh_rollups(live=True)

    def _collect(self) -> list[Received]:
        """The messages of one batch, parsed into the loader (not yet flushed)."""
        try:
            first = self.inbox.get(timeout=IDLE_SECONDS)
        except queue.Empty:
            return []
        batch = [first]
        self._open = 1
        rows = self._parse(first)
        deadline = time.monotonic() + FLUSH_SECONDS
        while rows < self.loader.batch_rows and time.monotonic() < deadline:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                break
            batch.append(message)
            self._open += 1
            rows += self._parse(message)
        if self.metrics:  # counted here, once a batch, rather than by the network thread
            self._counted["received"].inc(len(batch))
            self._counted["redelivered"].inc(sum(message.dup for message in batch))
        return batch

    def _parse(self, message: Received) -> int:
        parsed = self.parser.parse(message.topic, message.payload, message.arrival)
        loader = self.loader
        # The loader flushes by itself at batch_rows: still before any acknowledgement.
        for row, line, raw in parsed.rows:
            loader.add_row(row, line, raw)
        for reject in parsed.rejects:
            loader.add_reject(reject)
        if self.metrics:
            arrival = message.arrival.timestamp()
            for row, _, _ in parsed.rows:
                self._arrivals[row[0]] = arrival
            if parsed.rejects and parsed.rejects[0].reason == "invalid_payload" and not parsed.rows:
                self._counted["rejected"].inc()
        return len(parsed.rows) + len(parsed.rejects)

    def _store(self, batch: list[Received]) -> None:
        """Commit the batch (waiting out a lost database), then acknowledge its messages."""
        self.loader.flush()
        with self._ack_lock:
            # A message of an earlier connection is delivered again by the broker: its mid may
            # now name another message, so it is left to the redelivery.
            mids = [message.mid for message in batch
                    if message.qos and message.connection == self.connection]
            self.client.ack_many(mids)
        acknowledged = len(mids)
        self._open = 0
        if self.metrics:
            self._counted["acknowledged"].inc(acknowledged)
            self.metrics.ages.arrived(self._arrivals)
            self._arrivals = {}

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self.inbox.put(Received(message.topic, message.payload, self.clock(), message.mid,
                                message.qos, message.dup, self.connection))

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            if reason in ("Bad user name or password", "Not authorized"):
                self._fatal = (f"the broker {self.broker} refused the connection: {reason} "
                               "(WATTWATCH_MQTT_USERNAME and WATTWATCH_MQTT_PASSWORD)")
            else:
                log.warning("the broker %s refused the connection: %s; retrying", self.broker,
                            reason)
            return
        with self._ack_lock:
            self.connection += 1
        client.subscribe([(topic, 1) for topic in self.topics])
        if self._lost_at is not None:
            log.info("broker %s back after %.1f s (session present: %s)", self.broker,
                     time.monotonic() - self._lost_at, flags.session_present)
            self._lost_at = None
        else:
            log.info("connected to broker %s, subscribed to %s (session present: %s)",
                     self.broker, ", ".join(self.topics), flags.session_present)
        if self.metrics:
            self.metrics.connected.set(1)

    def _on_connect_fail(self, client, userdata) -> None:
        if problem := untrusted_certificate(client, self.broker):
            self._fatal = problem
        elif self.connection == 0:  # never connected yet: say why it waits
            log.warning("cannot connect to broker %s (%s); retrying with backoff", self.broker,
                        client.connect_error or "connection failed")

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self.metrics:
            self.metrics.connected.set(0)
        if self._lost_at is None and reason.is_failure:  # not our own disconnect at the end
            self._lost_at = time.monotonic()
            log.warning("broker %s connection lost (%s); reconnecting with backoff", self.broker,
                        reason)

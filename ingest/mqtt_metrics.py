"""Prometheus metrics of `wattwatch ingest mqtt`, beside the ingest metrics in the same registry."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

# received: delivered by the broker (redeliveries included), counted as a batch takes it in;
# redelivered: of those, marked by the broker as sent before; rejected: an unparseable payload
# (an invalid_payload reject); acknowledged: acknowledged to the broker once its rows or rejects
# were committed.
OUTCOMES = ("received", "redelivered", "rejected", "acknowledged")


class MessageAges:
    """Seconds since the last message of each meter arrived, computed at each scrape:

        # HELP wattwatch_ingest_mqtt_last_message_age_seconds Seconds since the last MQTT message of each meter arrived
        # TYPE wattwatch_ingest_mqtt_last_message_age_seconds gauge
        wattwatch_ingest_mqtt_last_message_age_seconds{meter="m-1"} 0.42
    """

    def __init__(self, registry: CollectorRegistry, clock=time.time):
        self.clock = clock
        self._arrivals: dict[str, float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def arrived(self, arrivals: dict[str, float]) -> None:
        with self._lock:
            self._arrivals.update(arrivals)

    def collect(self):
        family = GaugeMetricFamily("wattwatch_ingest_mqtt_last_message_age_seconds",
                                   "Seconds since the last MQTT message of each meter arrived",
                                   labels=["meter"])
        now = self.clock()
        with self._lock:
            for meter, arrival in sorted(self._arrivals.items()):
                family.add_metric([meter], max(now - arrival, 0.0))
        yield family


class MqttMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.messages = Counter("wattwatch_ingest_mqtt_messages", "MQTT messages by outcome "
                                "(received, redelivered, rejected, acknowledged)", ["outcome"],
                                registry=registry)
        for outcome in OUTCOMES:
            self.messages.labels(outcome)
        self.backlog = Gauge("wattwatch_ingest_mqtt_backlog_messages",
                             "MQTT messages delivered by the broker and not yet stored (queued in "
                             "the ingest or in its open batch)", registry=registry)
        self.connected = Gauge("wattwatch_ingest_mqtt_connected",
                               "1 while connected to the MQTT broker, else 0", registry=registry)
        self.ages = MessageAges(registry)

"""`wattwatch ingest simulate --mqtt URL`: the simulated meters publish their readings to a
broker instead of writing them to the database, one JSON message per reading on
meters/<meter id>/readings, QoS 1, for `wattwatch ingest mqtt` to store. The meters' names
and the labels of the injected anomalies (not readings: nothing a meter would publish) are
still written to the database, so the dashboards and detection checks have them."""

from __future__ import annotations

import json
import threading

from ingest.parse import FIELD_NAMES
from ingest.publisher import Publisher
from ingest.simulate import live_steps
from wattwatch import logs

log = logs.get("ingest")
TOPIC = "meters/{meter}/readings"
# How long the end waits for the broker to acknowledge the last messages.
DRAIN_SECONDS = 30


def reading_payload(row: tuple) -> bytes:
    """{"meter_id", "time" (ISO 8601, UTC), and each field that has a value}: a gap is left out."""
    meter, moment, *values = row
    document = {"meter_id": meter, "time": moment.isoformat()}
    document.update((name, value) for name, value in zip(FIELD_NAMES, values) if value is not None)
    return json.dumps(document, separators=(",", ":")).encode()


def publish_live(publisher: Publisher, record_labels, *, stop: threading.Event, **steps) -> int:
    """Publish each step's readings as it comes (see live_steps), recording its labels with
    record_labels(meter, injections); the number published."""
    published = 0
    for rows, labels in live_steps(stop=stop, **steps):
        for meter, injections in labels:
            record_labels(meter, injections)
        for row in rows:
            publisher.publish(TOPIC.format(meter=row[0]), reading_payload(row))
        published += len(rows)
    if not publisher.wait(DRAIN_SECONDS):
        log.warning("the broker had not acknowledged every reading after %d s; paho drops the "
                    "rest at exit", DRAIN_SECONDS)
    return published

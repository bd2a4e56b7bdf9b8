"""MQTT message payloads to reading rows, with the same checks as a file's lines.

A payload is a JSON object (one reading) or a JSON array of objects (a gateway's batch). Keys
are our field names or UCI's (any case), or mapped with --map; other keys are ignored. The meter
comes from a topic level or a payload key; the time from a payload key (ISO 8601, naive = UTC,
or epoch seconds or milliseconds), else the broker's arrival time. Anything that is not such a
payload is one `invalid_payload` reject carrying the topic and the raw text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from wattwatch.fields import field_for
from ingest.parse import FIELD_NAMES, Reject, future_detail, meter_id_problem, value_problem
from ingest.timestamps import EPOCH
from wattwatch.errors import WattwatchError

METER_KEYS = ("meter_id", "meter")
TIME_KEYS = ("time", "timestamp", "ts", "date_time")
# An epoch number above this is in milliseconds (as seconds it would be after the year 5000).
EPOCH_MS_ABOVE = 1e11
POSITION = {name: 2 + index for index, name in enumerate(FIELD_NAMES)}
# Payload keys whose field is remembered: a feed uses a handful; a bound keeps odd payloads from
# growing the memory.
KNOWN_KEYS = 1024


class MessageLine(int):
    """The 1-based position of a reading in its message, carrying the message's topic and the
    SHA-256 of its topic and payload: a reject's key is (source, digest, position, meter), so a
    message the broker delivers again records its rejects once."""

    topic: str
    digest: str

    def __new__(cls, position: int, topic: str, digest: str) -> MessageLine:
        line = super().__new__(cls, position)
        line.topic, line.digest = topic, digest
        return line


@dataclass(frozen=True)
class PayloadOptions:
    mapping: dict[str, str] = field(default_factory=dict)  # payload key -> field (--map)
    meter_level: int | None = None  # 1-based topic level holding the meter id
    meter_key: str | None = None  # payload key of the meter id (default: meter_id or meter)
    time_key: str | None = None  # payload key of the time (default: time, timestamp, ts...)


@dataclass
class Parsed:
    """One message's readings (row, line, raw text) and rejects."""
    rows: list[tuple[tuple, MessageLine, str]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


class PayloadParser:
    def __init__(self, options: PayloadOptions, ranges: dict[str, tuple[float, float]],
                 max_future: timedelta):
        self.options = options
        self.ranges = ranges
        self.max_future = max_future
        self.meter_keys = (options.meter_key,) if options.meter_key else METER_KEYS
        self.time_keys = (options.time_key,) if options.time_key else TIME_KEYS
        unknown = sorted(set(options.mapping.values()) - set(FIELD_NAMES))
        if unknown:
            raise WattwatchError(f"--map: {', '.join(unknown)} is not a reading field; expected "
                                 f"one of {', '.join(FIELD_NAMES)}")
        self.mapping = {key.strip().lower(): target for key, target in options.mapping.items()}
        self._fields: dict[str, str | None] = {}  # payload key -> its field (None: not a field)

    def parse(self, topic: str, payload: bytes, arrival: datetime) -> Parsed:
        digest = hashlib.sha256(topic.encode() + b"\n" + payload).hexdigest()
        parsed = Parsed()
        topic_meter = self._topic_meter(topic)
        try:
            text = payload.decode()
            document = json.loads(text)  # from text: detecting the encoding of bytes costs more
        except ValueError:  # UnicodeDecodeError is one
            text = payload.decode("utf-8", errors="replace")
            try:
                document = json.loads(payload)  # UTF-16 or 32, or a byte order mark
            except ValueError as exc:
                parsed.rejects.append(Reject(MessageLine(1, topic, digest), text,
                                             "invalid_payload", f"not JSON: {exc}", topic_meter))
                return parsed
        items = document if isinstance(document, list) else [document]
        if not items:
            parsed.rejects.append(Reject(MessageLine(1, topic, digest), text, "invalid_payload",
                                         "an empty JSON array", topic_meter))
        latest = arrival + self.max_future
        for position, item in enumerate(items, 1):
            line = MessageLine(position, topic, digest)
            raw = text if len(items) == 1 else json.dumps(item, separators=(",", ":"))
            result = self._reading(item, line, raw, topic_meter, arrival, latest)
            if isinstance(result, Reject):
                parsed.rejects.append(result)
            else:
                parsed.rows.append((result, line, raw))
        return parsed

    def _topic_meter(self, topic: str) -> str | None:
        level = self.options.meter_level
        if level is None:
            return None
        levels = topic.split("/")
        return levels[level - 1] if level <= len(levels) else None

    def _reading(self, item, line: MessageLine, raw: str, topic_meter: str | None,
                 arrival: datetime, latest: datetime) -> tuple | Reject:
        if not isinstance(item, dict):
            return Reject(line, raw, "invalid_payload",
                          f"expected a JSON object of a reading, got {type(item).__name__}",
                          topic_meter)
        meter = topic_meter if self.options.meter_level else _first(item, self.meter_keys)
        if meter is None or meter == "":
            where = (f"topic level {self.options.meter_level}" if self.options.meter_level
                     else "key " + " or ".join(self.meter_keys))
            return Reject(line, raw, "missing_meter", f"no meter id in {where}")
        meter = str(meter)
        if problem := meter_id_problem(meter):
            return Reject(line, raw, "invalid_meter", problem)
        stamp = _first(item, self.time_keys)
        if stamp is None:
            moment = arrival
        else:
            moment = _moment(stamp)
            if moment is None:
                return Reject(line, raw, "unparseable",
                              f"time: cannot read {stamp!r} as ISO 8601 or epoch seconds or "
                              "milliseconds", meter)
            if moment > latest:
                return Reject(line, raw, "future_timestamp", future_detail(moment, latest), meter)
        row = [meter, moment, None, None, None, None, None, None, None]
        for key, value in item.items():
            name = self._field(key)
            if name is None or value is None or value == "":
                continue  # another series, or a gap: stored as NULL, never invented
            number = _number(value)
            if number is None:
                return Reject(line, raw, "non_numeric", f"{name}: expected a number, got {value!r}",
                              meter)
            low, high = self.ranges[name]
            if not low <= number <= high:
                return Reject(line, raw, *value_problem(name, number, str(value), low, high), meter)
            row[POSITION[name]] = number
        return tuple(row)


    def _field(self, key: str) -> str | None:
        try:
            return self._fields[key]
        except KeyError:
            name = self.mapping.get(key.lower()) or field_for(key)
            if len(self._fields) < KNOWN_KEYS:
                self._fields[key] = name
            return name


def _first(item: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in item:
            return item[key]
    return None


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _moment(stamp) -> datetime | None:
    """An aware UTC time from ISO 8601 text (naive: UTC) or an epoch number (or its text)."""
    if isinstance(stamp, bool):
        return None
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.strip())
        except ValueError:
            stamp = _number(stamp)
            if stamp is None:
                return None
        else:
            if moment.tzinfo is None:
                return moment.replace(tzinfo=timezone.utc)
            return moment.astimezone(timezone.utc)
    if isinstance(stamp, (int, float)):
        seconds = stamp / 1000 if abs(stamp) > EPOCH_MS_ABOVE else stamp
        try:
            return EPOCH + timedelta(seconds=seconds)
        except (OverflowError, ValueError):
            return None
    return None

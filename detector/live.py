"""Meters with few pending readings (the live case) read and scored together: one read of all
their new readings, with the readings before them that the features need unless kept from the
meter's previous cycle (`Tail`), and one pass of the models stacked by layout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg

from detector import incidents, readings, registry, stacked
from detector.scoring import Scored, score_frame, score_stacked
from detector.seasonality import micros
from detector.watermarks import NEVER, Pending

# A meter with at most this many new readings is scored in its models' stack; with more, the
# stack's sliding windows would cost more than the meter's own model call.
STACK_MAX_NEW = 32


@dataclass(frozen=True)
class Tail:
    """A meter's newest readings scored, as many as its model's features need before the next
    reading: the next cycle then reads only the new readings."""

    version: int
    rows: readings.Rows
    mark: datetime  # the watermark this process wrote with them

    def serves(self, pending: Pending, model: registry.ActiveModel) -> bool:
        """True when these are the readings just before the pending ones (same model, the
        watermark as this process left it: nobody else scored the meter since, and no pending
        reading older than them: a late reading sends the meter back to the database)."""
        return (self.version == model.version and pending.mark == self.mark
                and len(self.rows) > 0 and micros(pending.first) > self.rows.t[-1])


@dataclass
class Group:
    """What scoring a group gave: the scores to write, the meters whose pending readings they
    all are, and the meters that brought too many readings (to be scored alone, in batches)."""

    batch: list[Scored]
    done: list[Pending]
    alone: list[Pending]


def score_group(conn: psycopg.Connection, group: list[Pending],
                models: dict[str, registry.ActiveModel], limit: int, tails: dict[str, Tail],
                layouts: dict[str, tuple | None], stacks: dict[tuple, stacked.Stack]) -> Group:
    """Read and score the group's pending readings; `tails` is updated with each scored
    meter's newest readings (and loses the meters left to be scored alone)."""
    held = {}
    for p in group:
        tail = tails.get(p.meter.meter_id)
        if tail is not None and tail.serves(p, models[p.meter.meter_id]):
            held[p.meter.meter_id] = tail.rows
    kept = [p for p in group if p.meter.meter_id in held]
    other = [p for p in group if p.meter.meter_id not in held]
    with conn.transaction():
        fetched = dict(zip([p.meter.meter_id for p in kept + other], readings.new_rows(
            conn, [(p.meter, p.first, p.newest) for p in kept],
            min((p.since for p in kept), default=NEVER)) + readings.group_rows(
            conn, [(p.meter, p.first, p.newest, models[p.meter.meter_id].context_rows)
                   for p in other], limit)))
        # each meter's run of anomalous readings open before its first pending reading
        runs = dict(zip([p.meter.meter_id for p in group], incidents.open_runs(
            conn, [incidents.owner(p.meter, models[p.meter.meter_id]) for p in group],
            [p.first for p in group])))
    scored, by_layout = Group([], [], []), {}
    for p in group:
        meter_id, model = p.meter.meter_id, models[p.meter.meter_id]
        rows = fetched[meter_id]
        if meter_id in held:
            rows = held[meter_id].then(rows)
        new = rows.t >= micros(p.first)
        count = int(new.sum())
        if count >= limit:
            scored.alone.append(p)
            tails.pop(meter_id, None)
            continue
        scored.done.append(p)
        tails[meter_id] = Tail(model.version, rows.tail(model.context_rows), p.next_mark)
        layout = layouts.get(meter_id)
        if 0 < count <= STACK_MAX_NEW and layout is not None:
            by_layout.setdefault(layout, []).append((p, model, rows, count))
            continue
        frame = rows.frame(p.meter.timezone)
        alone = score_frame(p, model, frame[~new], frame[new], runs[meter_id])
        if len(alone.result):
            scored.batch.append(alone)
    scored.batch += [score_stacked(stacks[layout], members,
                                   [runs[p.meter.meter_id] for p, *_ in members])
                     for layout, members in by_layout.items()]
    return scored


def held_times(tails: dict[str, Tail]) -> dict[str, np.ndarray]:
    """The times of the readings kept of each meter (read and scored by this process)."""
    return {meter_id: tail.rows.t for meter_id, tail in tails.items()}

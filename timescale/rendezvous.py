"""Which live worker each meter belongs to: rendezvous (highest-random-weight) hashing.

Every worker computes the same answer from the same list of live workers, with no talk
between them: a meter goes to the worker with the highest weight hash(meter, worker). When a
worker leaves, only its meters move (each to its next-highest worker); when one joins, it
takes about 1/N of the meters, from every other worker alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(meter_id: str, worker_id: str) -> int:
    """The meter's weight at this worker: the same on every machine and Python version."""
    digest = hashlib.blake2b(f"{meter_id}\0{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(meter_id: str, workers: Iterable[str]) -> str | None:
    """The worker the meter belongs to (None when there is no worker)."""
    return max(workers, key=lambda worker: weight(meter_id, worker), default=None)


class Share:
    """The meters one worker holds, computed again only for the meters whose answer may have
    changed: every meter when the live workers change, the new ones when meters are added."""

    def __init__(self, me: str):
        self.me = me
        self.workers: tuple[str, ...] = ()
        self.owners: dict[str, str | None] = {}

    def update(self, workers: Iterable[str], meter_ids: Iterable[str]) -> tuple[set[str], set[str]]:
        """Take the live workers and every meter; the meters gained and lost by this worker."""
        before = self.mine()
        workers = tuple(sorted(set(workers)))
        if workers != self.workers:
            self.workers, self.owners = workers, {}
        meter_ids = set(meter_ids)
        self.owners = {meter_id: self.owners[meter_id] if meter_id in self.owners
                       else owner(meter_id, workers) for meter_id in meter_ids}
        after = self.mine()
        return after - before, before - after

    def mine(self) -> set[str]:
        return {meter_id for meter_id, worker in self.owners.items() if worker == self.me}

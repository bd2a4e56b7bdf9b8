"""What one ingest run did: rows read = loaded + duplicates + rejected, always."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Summary:
    source: str
    read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    meters: set[str] = field(default_factory=set)
    first_time: datetime | None = None
    last_time: datetime | None = None
    dst_ambiguous: int = 0
    dst_nonexistent: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    layout: str = ""
    reconnects: int = 0
    # "file ended early at line N: why" when a compressed stream broke; the line is a reject.
    ended_early: str | None = None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def balanced(self) -> bool:
        return self.read == self.loaded + self.duplicates + self.rejected_total

    def as_dict(self) -> dict:
        return {
            "source": self.source, "read": self.read, "loaded": self.loaded,
            "duplicates": self.duplicates, "rejected": self.rejected_total,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "seconds": round(self.seconds, 3), "rows_per_second": round(self.rows_per_second),
            "meters": sorted(self.meters),
            "first_time": self.first_time.isoformat() if self.first_time else None,
            "last_time": self.last_time.isoformat() if self.last_time else None,
            "dst_ambiguous": self.dst_ambiguous, "dst_nonexistent": self.dst_nonexistent,
            "ignored_columns": self.ignored_columns, "layout": self.layout,
            "reconnects": self.reconnects, "ended_early": self.ended_early,
        }

    def format(self) -> str:
        lines = [
            f"{self.source}: read {self.read:,} rows in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s)",
            f"  loaded {self.loaded:,}, duplicates skipped {self.duplicates:,}, "
            f"rejected {self.rejected_total:,}",
        ]
        lines += [f"    {reason}: {count:,}" for reason, count in sorted(self.rejected.items())]
        if self.ended_early:
            lines.append(f"  {self.ended_early}")
        if self.meters:
            shown = ", ".join(sorted(self.meters)[:5]) + (" ..." if len(self.meters) > 5 else "")
            lines.append(f"  meters: {len(self.meters)} ({shown})")
        if self.first_time:
            lines.append(f"  time span: {self.first_time.isoformat()} .. {self.last_time.isoformat()}")
        if self.dst_ambiguous or self.dst_nonexistent:
            lines.append(f"  daylight saving: {self.dst_ambiguous} ambiguous local times resolved, "
                         f"{self.dst_nonexistent} nonexistent rejected")
        if self.reconnects:
            lines.append(f"  database connection lost and replaced {self.reconnects} time(s)")
        if self.ignored_columns:
            lines.append(f"  columns ignored: {', '.join(self.ignored_columns)}")
        return "\n".join(lines)

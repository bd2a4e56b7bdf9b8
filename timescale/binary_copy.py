"""PostgreSQL's binary COPY framing, for streams that numpy builds as whole arrays
(the detector's scores out)."""

from __future__ import annotations

import struct

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)  # no flags, no header extension
TRAILER = struct.pack(">h", -1)
POSTGRES_EPOCH = 946_684_800  # binary timestamps count microseconds from 2000-01-01 UTC (Unix seconds)

"""Open an input file as text lines, plain or gzip (detected from its first bytes)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import TextIO

from wattwatch.errors import WattwatchError

GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: Path) -> TextIO:
    """A text stream over the file; newlines are kept as written so raw lines stay exact."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise WattwatchError(f"{path}: cannot open: {exc.strerror}") from None
    if raw.peek(2)[:2] == GZIP_MAGIC:
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")

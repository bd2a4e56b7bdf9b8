"""The test stack itself and the Prometheus configuration, against the real Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, Counter

from exporters.metrics import serve_metrics
from tests.conftest import prometheus_query

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = PROJECT / "prometheus" / "prometheus.yml"
JOBS = {"prometheus", "ingest", "detector", "drift", "exporter"}


def test_promtool_accepts_the_config():
    result = subprocess.run(["promtool", "check", "config", str(CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_config_scrapes_every_service_from_its_targets_file():
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == JOBS
    for name, job in jobs.items():
        files = [f for sd in job["file_sd_configs"] for f in sd["files"]]
        assert files == [f"targets/{name}.json"]
        targets = json.loads((PROJECT / "prometheus" / files[0]).read_text())
        assert targets and all(group["targets"] for group in targets)


def test_prometheus_runs_the_project_config_and_scrapes_itself(stack):
    base = stack["prometheus_url"]
    with urllib.request.urlopen(f"{base}/api/v1/status/config", timeout=5) as response:
        loaded = yaml.safe_load(json.load(response)["data"]["yaml"])
    assert {job["job_name"] for job in loaded["scrape_configs"]} == JOBS
    deadline = time.monotonic() + 45  # first scrape comes within one 15 s interval
    while time.monotonic() < deadline:
        result = prometheus_query(base, 'up{job="prometheus"}')
        if result:
            break
        time.sleep(1)
    assert [sample["value"][1] for sample in result] == ["1"]
    assert result[0]["metric"]["instance"] == base.removeprefix("http://")


def test_stack_uses_an_external_server_when_given(admin_url, tmp_path):
    """WATTWATCH_TEST_DATABASE_URL: no cluster is started, the given server is passed through."""
    state = tmp_path / "external"
    env = dict(os.environ, WATTWATCH_TEST_DATABASE_URL=admin_url)
    script = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
    started = subprocess.run([*script, "up", "--state", str(state)], env=env,
                             capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        assert info["database_url"] == admin_url
        assert "postgres_data" not in info
        assert prometheus_query(info["prometheus_url"], "vector(1)")[0]["value"][1] == "1"
    finally:
        subprocess.run([*script, "down", "--state", str(state)], env=env, timeout=60)
    assert not state.exists()


def test_install_is_a_no_op_once_done():
    """A second install finds everything in place: quick, and it needs no network or root."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(PROJECT / "scripts" / "stack.py"), "install"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert time.monotonic() - started < 10
    assert shutil.which("prometheus") and shutil.which("promtool")


def test_a_service_metrics_endpoint_is_scraped_through_its_targets_file(stack, scrape_target):
    registry = CollectorRegistry()
    Counter("wattwatch_selftest_events", "Events counted by the self-test", registry=registry).inc(3)
    port = serve_metrics(registry, 0)
    scrape_target("ingest", port)
    result = prometheus_query(stack["prometheus_url"], 'wattwatch_selftest_events_total{job="ingest"}')
    assert [sample["value"][1] for sample in result] == ["3"]

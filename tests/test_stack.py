"""The test stack itself and the Prometheus configuration, against the real Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, Counter

from tests.conftest import prometheus_query, prometheus_wait
from wattwatch.metrics import serve_metrics

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
    target = scrape_target("ingest", port)
    result = prometheus_query(stack["prometheus_url"], f"wattwatch_selftest_events_total{{{target}}}")
    assert [sample["value"][1] for sample in result] == ["3"]


def test_an_installed_package_runs_the_stack_with_the_config_it_ships(admin_url, tmp_path):
    """`wattwatch demo` from a wheel, not a checkout: the stack module finds Prometheus's config
    and Grafana's files under share/wattwatch/ of the prefix the wheel was installed into."""
    source = tmp_path / "source"
    for name in ("wattwatch", "timescale", "ingest", "detector", "drift", "exporters",
                 "prometheus", "grafana"):
        shutil.copytree(PROJECT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "wheel"), str(source)],
                   check=True, timeout=300)
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    # --ignore-installed: without it pip would first uninstall the editable install under test.
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--ignore-installed", "--prefix",
                    str(prefix), *map(str, (tmp_path / "wheel").glob("*.whl"))], check=True, timeout=120)
    python = str(prefix / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies come from the test environment, after the installed wheel on the path.
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["WATTWATCH_TEST_DATABASE_URL"] = admin_url

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    where = run("-c", "import wattwatch.demo as d; from wattwatch.stack import shipped; "
                "print(d.__file__); print(shipped('grafana'))")
    assert where.returncode == 0, where.stderr
    module, grafana = where.stdout.split()
    assert module.startswith(site) and Path(grafana) == prefix / "share" / "wattwatch" / "grafana"
    assert (Path(grafana) / "provisioning" / "datasources" / "datasources.yaml").exists()
    assert "Runs as root" in run("-m", "wattwatch.cli", "demo", "--help").stdout
    state = tmp_path / f"installed-{os.getpid()}"
    started = run("-m", "wattwatch.stack", "up", "--state", str(state))
    try:
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        assert prometheus_wait(info["prometheus_url"], 'up{job="prometheus"} == 1', timeout=60)
        config = json.load(urllib.request.urlopen(info["prometheus_url"] + "/api/v1/status/config"))
        assert "job_name: exporter" in config["data"]["yaml"]
    finally:
        run("-m", "wattwatch.stack", "down", "--state", str(state))
    assert not state.exists()

#!/usr/bin/env python3
"""Fleet benchmark: --meters simulated meters at one reading a minute each, --days of history
loaded, every model trained by `wattwatch detect train`, then --minutes live with W
`wattwatch detect run` workers for each W of --workers (default 1, then 2).

Reports per stage: history load (rows/s), training (s, s per meter, peak RSS), for each W the
time from the start of live until each meter's first score (p50, max), insert-to-score
(readings.ingested_at to anomaly_scores.scored_at: p50, p95, max, of the readings stored once
every meter had its first score), readings left unscored or scored twice, and peak RSS per
worker; then the database size, and with compression: measured where the server
runs the community ('timescale') license, else estimated from TimescaleDB's documented ratio.

Everything the benchmark measures runs through the `wattwatch` CLI as subprocesses, so the
script measures any version of the code:

- history: `wattwatch ingest simulate --from --to` writes --distinct meters (the simulator's
  data: daily and weekly cycles, appliance events, labelled anomalies); the other meters are
  server-side copies of them (INSERT ... SELECT), which loads a fleet several times faster than
  simulating each meter. Copies have the same readings, but each is trained and scored as a
  meter of its own.
- training: `wattwatch detect train` (all meters; WATTWATCH_DETECTOR_TRAIN_DAYS, 28 by
  default, caps the window; the detector needs at least two days, and 14 to learn the weekly
  cycle). With --train-distinct only the distinct meters are trained, before the copies are
  made, and each copy gets its meter's model: live scoring costs the same whichever way a
  model was made, so the live figures of a large fleet come without its hour of training.
- the history counts as scored (each meter's detector watermark is set at its end, as after a
  backfill), so that live starts as a restarted fleet would; --backfill scores it instead with
  `wattwatch detect run --once` (timed).
- live: the W workers start at the same moment as the feed, which then inserts one reading per
  meter every minute in one transaction (the readings of the same minute a whole number of
  weeks earlier, of days when the history is shorter). The workers are started afresh for each
  W (a cold start: models loaded, context read) and stopped once every fed reading is scored.

Peak RSS is each process's own (wait4's ru_maxrss). WATTWATCH_DATABASE_URL may name a
superuser URL of a TimescaleDB server (a scratch database is created there and dropped);
unset, the script starts a throwaway stack (scripts/stack.py up) and stops it at the end.
Ctrl-C stops the children and cleans up. Progress goes to stderr, the table (or --json) to
stdout.

    .venv/bin/python scripts/bench_fleet.py --meters 200 --days 8 --minutes 3
    .venv/bin/python scripts/bench_fleet.py --json > fleet.json     # 10,000 meters
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.support.scratch import create_database, drop_database  # noqa: E402
from timescale.connect import with_database  # noqa: E402

# The CLI of this checkout, run by the interpreter running this script.
WATTWATCH = [sys.executable, "-m", "wattwatch.cli"]
STACK = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
PREFIX = "fleet"
VALUES = ("active_power_kw, reactive_power_kw, voltage_v, current_a, sub_metering_1_wh,"
          " sub_metering_2_wh, sub_metering_3_wh")
DAY = timedelta(days=1)
# After the last live reading, how long the workers may take to score what is left.
SETTLE_SECONDS = 300
# TimescaleDB's documentation ("Basic compression with hypercore"): compression "typically
# reduc[es] storage by 90-98%".
DOCUMENTED_REDUCTION = (0.90, 0.98)


def log(message: str) -> None:
    print(f"bench_fleet: {message}", file=sys.stderr, flush=True)


class Children:
    """The processes the benchmark started, each stopped (SIGINT, then SIGKILL) on the way out."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen([*WATTWATCH, *args], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
        out.close()
        self.running[name] = process
        return process

    def finish(self, name: str, stop: bool = False,
               timeout: float | None = None) -> tuple[int, int]:
        """Wait for the process (after SIGINT when `stop`); its exit status and peak RSS in
        bytes. A process still there after `timeout` is killed."""
        process = self.running.pop(name)
        if stop:
            process.send_signal(signal.SIGINT)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                deadline = None
            time.sleep(0.1)
        process.returncode = os.waitstatus_to_exitcode(status)
        return process.returncode, usage.ru_maxrss * 1024

    def run(self, name: str, args: list[str], env: dict) -> tuple[float, int]:
        """Run a command to its end: seconds and peak RSS; its log's tail on failure."""
        started = time.monotonic()
        self.start(name, args, env)
        code, rss = self.finish(name)
        if code != 0:
            raise SystemExit(f"bench_fleet: `wattwatch {' '.join(args)}` exited with {code}:\n"
                             + self.tail(name))
        return time.monotonic() - started, rss

    def tail(self, name: str, lines: int = 20) -> str:
        return "\n".join((self.logs / f"{name}.log").read_text(errors="replace")
                         .splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise SystemExit(f"bench_fleet: {name} exited with {process.returncode}:\n"
                                 + self.tail(name))

    def stop_all(self) -> None:
        for name in list(self.running):
            self.finish(name, stop=True, timeout=60)


def simulate(children: Children, env: dict, url: str, distinct: int, days: float) -> dict:
    """`ingest simulate` for the distinct meters; their names, the history's bounds, figures."""
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    seconds, _ = children.run("simulate", [
        "ingest", "simulate", "--meters", str(distinct), "--prefix", PREFIX,
        "--from", start.isoformat(), "--to", end.isoformat()], env)
    with psycopg.connect(url) as conn:
        templates = [row[0] for row in conn.execute(
            "SELECT meter_id FROM meters ORDER BY meter_id").fetchall()]
        simulated = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    log(f"simulated {len(templates)} meters, {simulated:,} readings in {seconds:.0f} s")
    return {"start": start, "end": end, "templates": templates, "simulate_s": seconds,
            "simulate_rows": simulated}


def copy_fleet(url: str, simulated: dict, meters: int, jobs: int, models: bool) -> dict:
    """Server-side copies of the simulated meters up to `meters` (with their active models
    when `models`); returns the history's figures (and each meter's template)."""
    templates = simulated["templates"]
    copies = {template: [] for template in templates}
    for number in range(len(templates), meters):
        template = templates[number % len(templates)]
        copies[template].append(f"{template}-{number // len(templates)}")

    def copy(template: str) -> None:
        names = copies[template]
        if not names:
            return
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO meters (meter_id, name, site, timezone, tariff_per_kwh, currency,"
                " nominal_voltage_v) SELECT c, name, site, timezone, tariff_per_kwh, currency,"
                " nominal_voltage_v FROM meters, unnest(%s::text[]) AS c WHERE meter_id = %s",
                (names, template))
            conn.execute(
                f"INSERT INTO readings (time, meter_id, {VALUES}) SELECT time, c, {VALUES}"
                " FROM readings, unnest(%s::text[]) AS c WHERE meter_id = %s",
                (names, template))
            if models:
                conn.execute(
                    "INSERT INTO models (meter_id, algorithm, parameters, train_from, train_to,"
                    " threshold, metrics, model, reason) SELECT c, algorithm, parameters,"
                    " train_from, train_to, threshold, metrics, model, reason FROM models,"
                    " unnest(%s::text[]) AS c WHERE meter_id = %s AND status = 'active'",
                    (names, template))

    copy_started = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(copy, templates))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")  # as autovacuum would have by the time a fleet goes live
        rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    copied = time.monotonic() - copy_started
    log(f"copied to {meters} meters ({rows - simulated['simulate_rows']:,} readings"
        f"{', models' if models else ''}) in {copied:.0f} s")
    template_of = {template: template for template in templates}
    template_of.update({name: template for template, names in copies.items() for name in names})
    seconds = simulated["simulate_s"] + copied
    return {"start": simulated["start"], "end": simulated["end"], "template_of": template_of,
            "rows": rows, "simulate_s": simulated["simulate_s"],
            "simulate_rows": simulated["simulate_rows"], "copy_s": copied,
            "seconds": seconds, "rows_per_s": rows / seconds}


def source_time(moment: datetime, start: datetime, end: datetime) -> datetime:
    """The reading of the history a live reading at `moment` repeats: the same minute the
    fewest whole weeks earlier that fall in the history, else the fewest whole days."""
    days = math.floor((moment - end) / DAY) + 1  # the fewest whole days back before `end`
    for unit in (7, 1):
        back = moment - math.ceil(days / unit) * unit * DAY
        if back >= start:
            return back
    raise SystemExit("bench_fleet: the history is too short for the live readings "
                     "(give more --days)")


def mark_history_scored(url: str) -> None:
    """Every meter's detector watermark at the newest reading stored, its late-commit check
    closed: the state a finished backfill leaves."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO detector_watermarks (meter_id, ingested_at, recheck_after)"
            " SELECT meter_id, newest, newest FROM meters,"
            " (SELECT max(ingested_at) AS newest FROM readings) AS n")


def live(children: Children, env: dict, url: str, history: dict, workers: int,
         minutes: int, after: datetime) -> dict:
    """W workers and one reading per meter a minute for `minutes`, from the first minute
    after `after` (the last one fed before) that has begun or the next one; the figures."""
    ids = list(history["template_of"])
    templates = [history["template_of"][meter_id] for meter_id in ids]
    first = max(datetime.now(timezone.utc).replace(second=0, microsecond=0),
                after + timedelta(minutes=1))
    ticks = [first + timedelta(minutes=n) for n in range(minutes)]
    time.sleep(max(0.0, (first - datetime.now(timezone.utc)).total_seconds()))
    with psycopg.connect(url, autocommit=True) as conn:
        # live starts: the workers and the first minute's readings at once
        started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        names = [f"detect-run-{workers}w-{n}" for n in range(workers)]
        for name in names:
            children.start(name, ["detect", "run", "--metrics-port", "0"], env)
        for tick in ticks:
            while (wait := (tick - datetime.now(timezone.utc)).total_seconds()) > 0:
                children.check_alive()
                time.sleep(min(wait, 1.0))
            conn.execute(
                f"INSERT INTO readings (time, meter_id, {VALUES}) SELECT %s, f.meter_id, {VALUES}"
                " FROM unnest(%s::text[], %s::text[]) AS f(meter_id, template)"
                " JOIN readings r ON r.meter_id = f.template AND r.time = %s",
                (tick, ids, templates, source_time(tick, history["start"], history["end"])))
            log(f"{workers} worker(s): minute {tick:%H:%M} fed")
        window = (ticks[0], ticks[-1])
        fed = conn.execute("SELECT count(*) FROM readings WHERE time BETWEEN %s AND %s",
                           window).fetchone()[0]
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            children.check_alive()
            scored = conn.execute(
                "SELECT count(DISTINCT (meter_id, time)) FROM anomaly_scores"
                " WHERE time BETWEEN %s AND %s", window).fetchone()[0]
            if scored >= fed:
                break
            time.sleep(1)
        first_p50, first_max, meters_scored = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY first), max(first), count(*)"
            " FROM (SELECT extract(epoch FROM min(scored_at) - %s)::float8 AS first"
            "  FROM anomaly_scores WHERE time BETWEEN %s AND %s GROUP BY meter_id) AS f",
            (started, *window)).fetchone()
        # The steady state: readings stored once every meter had its first score (those
        # stored before waited for the cold start, the figure above).
        p50, p95, most, steady, scored_steady = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY lag), max(lag), count(*), count(lag)"
            " FROM (SELECT extract(epoch FROM s.scored_at - r.ingested_at)::float8 AS lag"
            "  FROM readings r LEFT JOIN anomaly_scores s USING (meter_id, time)"
            "  WHERE r.time BETWEEN %s AND %s AND r.ingested_at > %s + %s * interval '1 s')"
            " AS l", (*window, started, first_max)).fetchone()
        unscored, twice = conn.execute(
            "SELECT count(*) FILTER (WHERE n = 0), count(*) FILTER (WHERE n > 1) FROM"
            " (SELECT count(s.meter_id) AS n FROM readings r LEFT JOIN anomaly_scores s"
            "  USING (meter_id, time) WHERE r.time BETWEEN %s AND %s"
            "  GROUP BY r.meter_id, r.time) AS c", window).fetchone()
    peaks = [children.finish(name, stop=True, timeout=60)[1] for name in names]
    return {"workers": workers, "minutes": minutes, "last_minute": ticks[-1], "readings_fed": fed,
            "meters_first_scored": meters_scored, "first_score_p50_s": first_p50,
            "first_score_max_s": first_max, "steady_readings": steady,
            "steady_scored": scored_steady, "insert_to_score_p50_s": p50,
            "insert_to_score_p95_s": p95, "insert_to_score_max_s": most,
            "unscored": unscored, "scored_twice": twice, "peak_rss_bytes": peaks}


def sizes(url: str) -> dict:
    """The database's size, and with compression: measured under the community license
    (every chunk of readings and anomaly_scores compressed), else estimated from the
    documented reduction (Apache builds have no compression)."""
    with psycopg.connect(url, autocommit=True) as conn:
        # how timescale/license.py reads it
        edition = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()[0]

        def measure() -> dict:
            return dict(zip(("database", "readings", "anomaly_scores"), conn.execute(
                "SELECT pg_database_size(current_database()), hypertable_size('readings'),"
                " hypertable_size('anomaly_scores')").fetchone()))

        found = {"license": edition, "bytes": measure(),
                 "readings": conn.execute("SELECT count(*) FROM readings").fetchone()[0]}
        if edition == "timescale":
            started = time.monotonic()
            for table in ("readings", "anomaly_scores"):
                conn.execute(f"SELECT compress_chunk(c, if_not_compressed => true)"
                             f" FROM show_chunks('{table}') AS c")
            found["compressed_bytes"] = measure()
            found["compress_s"] = time.monotonic() - started
        else:
            found["documented_reduction"] = list(DOCUMENTED_REDUCTION)
    return found


def mib(size: float) -> str:
    return f"{size / 2**20:,.0f} MiB"


def secs(value: float | None, digits: int) -> str:
    """Seconds, or n/a where nothing was scored to measure."""
    return "n/a" if value is None else f"{value:.{digits}f} s"


def table(result: dict) -> str:
    """The figures as a Markdown table."""
    load, train = result["load"], result["train"]
    rows = [
        ("history", f"{load['rows']:,} readings ({result['meters']:,} meters x "
                    f"{result['days']:g} days) in {load['seconds']:.0f} s, "
                    f"{load['rows_per_s']:,.0f} readings/s (simulate {load['simulate_s']:.0f} s "
                    f"for {result['distinct']} meters, copies {load['copy_s']:.0f} s)"),
        ("`detect train`", f"{train['meters']:,} meters in {train['seconds']:.0f} s, "
                           f"{train['seconds_per_meter']:.2f} s per meter, peak RSS "
                           f"{mib(train['peak_rss_bytes'])}"),
    ]
    if "backfill" in result:
        backfill = result["backfill"]
        rows.append(("backfill (`detect run --once`)",
                     f"{backfill['seconds']:.0f} s, {backfill['readings_per_s']:,.0f} readings/s, "
                     f"peak RSS {mib(backfill['peak_rss_bytes'])}"))
    for run in result["live"]:
        label = f"live, {run['workers']} worker{'s' if run['workers'] > 1 else ''}"
        rows += [
            (f"{label}: first score", f"{run['meters_first_scored']:,} of {result['meters']:,} "
             f"meters; p50 {secs(run['first_score_p50_s'], 1)}, max "
             f"{secs(run['first_score_max_s'], 1)} after the start"),
            (f"{label}: insert to score", f"p50 {secs(run['insert_to_score_p50_s'], 2)}, p95 "
             f"{secs(run['insert_to_score_p95_s'], 2)}, max "
             f"{secs(run['insert_to_score_max_s'], 2)} "
             f"({run['steady_scored']:,} of {run['steady_readings']:,} readings stored after "
             "every meter's first score)"),
            (f"{label}: exactly once", f"{run['readings_fed']:,} fed, {run['unscored']} unscored, "
             f"{run['scored_twice']} scored twice"),
            (f"{label}: peak RSS", ", ".join(mib(peak) for peak in run["peak_rss_bytes"])),
        ]
    size = result["size"]
    stored = size["bytes"]
    rows.append(("database", f"{mib(stored['database'])} (readings {mib(stored['readings'])}, "
                 f"{stored['readings'] / size['readings']:.0f} bytes per reading; anomaly_scores "
                 f"{mib(stored['anomaly_scores'])})"))
    if "compressed_bytes" in size:
        packed = size["compressed_bytes"]
        rows.append(("compressed (measured)", f"{mib(packed['database'])} (readings "
                     f"{mib(packed['readings'])}, anomaly_scores {mib(packed['anomaly_scores'])}; "
                     f"compress_chunk took {size['compress_s']:.0f} s)"))
    else:
        low, high = size["documented_reduction"]
        tables = stored["readings"] + stored["anomaly_scores"]
        rows.append(("compressed (estimated)", f"the server runs the {size['license']} license, "
                     f"without compression; TimescaleDB documents {low:.0%}-{high:.0%} less "
                     f"storage: readings and scores {mib(tables * (1 - high))}-"
                     f"{mib(tables * (1 - low))} instead of {mib(tables)}"))
    return "\n".join(["| stage | figures |", "|---|---|",
                      *(f"| {stage} | {figures} |" for stage, figures in rows)])


def benchmark(args: argparse.Namespace, admin: str, url: str, children: Children) -> dict:
    password = secrets.token_hex(8)
    # the fleet is declared before the first migration, so the chunks are sized to it
    owner = {**os.environ, "PYTHONPATH": str(PROJECT), "WATTWATCH_DATABASE_URL": url,
             "WATTWATCH_JOBS_PASSWORD": password, "WATTWATCH_EXPECTED_METERS": str(args.meters)}
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    jobs = {**owner, "WATTWATCH_DATABASE_URL": with_database(admin, name, "wattwatch_jobs",
                                                             password)}
    children.run("migrate", ["db", "migrate"], owner)
    distinct = min(args.distinct, args.meters)
    simulated = simulate(children, owner, url, distinct, args.days)
    trained = distinct if args.train_distinct else args.meters

    def train() -> tuple[float, int]:
        seconds, rss = children.run("train", ["detect", "train", "--reason", "benchmark"], jobs)
        log(f"trained {trained} meters in {seconds:.0f} s")
        return seconds, rss

    if args.train_distinct:
        seconds, rss = train()
    history = copy_fleet(url, simulated, args.meters, args.load_jobs, args.train_distinct)
    if not args.train_distinct:
        seconds, rss = train()
    result = {"meters": args.meters, "distinct": distinct, "days": args.days,
              "load": {key: value for key, value in history.items()
                       if key not in ("start", "end", "template_of")},
              "train": {"meters": trained, "seconds": seconds,
                        "seconds_per_meter": seconds / trained, "peak_rss_bytes": rss}}
    if args.backfill:
        seconds, rss = children.run("backfill", ["detect", "run", "--once"], jobs)
        result["backfill"] = {"seconds": seconds, "readings_per_s": history["rows"] / seconds,
                              "peak_rss_bytes": rss}
        log(f"history scored in {seconds:.0f} s")
    else:
        mark_history_scored(url)
    result["live"] = []
    for workers in args.workers:
        after = result["live"][-1]["last_minute"] if result["live"] else history["end"]
        result["live"].append(live(children, jobs, url, history, workers, args.minutes, after))
    result["size"] = sizes(url)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=14,
                        help="days of history per meter (default 14: the least from which the "
                        "detector learns the weekly cycle)")
    parser.add_argument("--minutes", type=int, default=10, help="minutes live for each W")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="W",
                        help="numbers of `detect run` workers, one live run each (default 1 2)")
    parser.add_argument("--distinct", type=int, default=100,
                        help="meters simulated; the others copy their readings (default 100)")
    parser.add_argument("--load-jobs", type=int, default=2,
                        help="connections copying the history at once (default 2)")
    parser.add_argument("--backfill", action="store_true",
                        help="score the history with `detect run --once` (timed) instead of "
                        "counting it as scored")
    parser.add_argument("--train-distinct", action="store_true",
                        help="train the --distinct meters only, each copy getting a copy of its "
                        "meter's model (for the live figures alone: training is timed on the "
                        "distinct meters)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes: at least 2 (the first minute's readings wait for the cold "
                     "start)")
    if min(args.workers) < 1 or args.meters < 1 or args.distinct < 1:
        parser.error("--workers, --meters and --distinct: at least 1")
    admin = os.environ.get("WATTWATCH_DATABASE_URL")
    state = url = None
    children = Children(Path(tempfile.mkdtemp(prefix="wattwatch-bench-fleet-logs-")))
    log(f"logs of the commands in {children.logs}")
    try:
        if admin is None:
            state = Path(tempfile.mkdtemp(prefix="wattwatch-bench-fleet-"))
            up = subprocess.run([*STACK, "up", "--state", str(state)], check=True,
                                capture_output=True, text=True)
            admin = json.loads(up.stdout)["database_url"]
        url = create_database(admin, f"ww_bench_fleet_{secrets.token_hex(4)}")
        result = benchmark(args, admin, url, children)
    except KeyboardInterrupt:
        raise SystemExit("bench_fleet: interrupted") from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave a stack
        children.stop_all()
        if url is not None:
            drop_database(admin, url)
        if state is not None:
            subprocess.run([*STACK, "down", "--state", str(state)], check=False,
                           stdout=subprocess.DEVNULL)
    print(json.dumps(result, indent=2, default=str) if args.json else table(result))


if __name__ == "__main__":
    main()

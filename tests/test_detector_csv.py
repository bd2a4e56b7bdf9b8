"""`wattwatch detect score-csv`: step-indexed and timestamped files, UCI names, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_cli import run_cli
from tests.test_detector_synthetic import household
from wattwatch.cli import main

UCI_NAMES = {"active_power_kw": "Global_active_power", "reactive_power_kw": "Global_reactive_power",
             "voltage_v": "Voltage", "current_a": "Global_intensity",
             "sub_metering_1_wh": "Sub_metering_1", "sub_metering_2_wh": "Sub_metering_2",
             "sub_metering_3_wh": "Sub_metering_3"}


def test_step_indexed_series_with_a_detected_period(tmp_path):
    """No timestamps: the cycle (97 steps) is found from the data, and a broken cycle late in
    the file is the most anomalous stretch."""
    rng = np.random.default_rng(2)
    steps = np.arange(6000)
    value = 10 + 5 * np.sin(2 * np.pi * steps / 97) + rng.normal(0, 0.3, len(steps))
    value[5000:5060] = 10 + rng.normal(0, 0.3, 60)  # the cycle stops for 60 steps
    pd.DataFrame({"step": steps, "load": value, "site": "x"}).to_csv(tmp_path / "in.csv", index=False)
    result = run_cli(["detect", "score-csv", str(tmp_path / "in.csv"), "--time-column", "step",
                      "--columns", "load", "-o", str(tmp_path / "out.csv")])
    assert result.returncode == 0, result.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["step", "load", "site", "anomaly_score", "anomaly_evidence",
                                 "is_anomaly", "severity", "kind"]
    assert out["anomaly_score"].between(0, 100).all()
    assert out["anomaly_evidence"].idxmax() == out["anomaly_score"].idxmax()
    assert (out["anomaly_score"] == out["anomaly_score"].max()).sum() == 1  # no tie at the top
    assert 5000 <= out["anomaly_score"].idxmax() < 5075
    flagged = out.index[out["is_anomaly"]]
    assert len(flagged) and ((flagged >= 5000) & (flagged < 5075)).mean() >= 0.9


def test_a_separate_reference_file_trains_and_every_row_of_the_input_is_scored(tmp_path):
    """--train-file: the model fits on an anomaly-free recording; the other file is scored from
    its first row, and the step between the two recordings is no anomaly (nothing joins them)."""
    rng = np.random.default_rng(5)

    def cycle(n: int, offset: float) -> np.ndarray:
        return offset + 5 * np.sin(2 * np.pi * np.arange(n) / 97) + rng.normal(0, 0.3, n)

    pd.DataFrame({"step": np.arange(4000), "load": cycle(4000, 10)}).to_csv(
        tmp_path / "ref.csv", index=False)
    value = cycle(3000, 10)
    value[2000:2060] = 10 + rng.normal(0, 0.3, 60)  # the cycle stops for 60 steps
    pd.DataFrame({"step": np.arange(3000), "load": value}).to_csv(tmp_path / "in.csv", index=False)
    result = run_cli(["detect", "score-csv", str(tmp_path / "in.csv"), "--time-column", "step",
                      "--columns", "load", "--train-file", str(tmp_path / "ref.csv"),
                      "-o", str(tmp_path / "out.csv")])
    assert result.returncode == 0, result.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 3000 and out["anomaly_score"].notna().all()
    assert 2000 <= out["anomaly_score"].idxmax() < 2075
    flagged = out.index[out["is_anomaly"]]
    assert len(flagged) and ((flagged >= 2000) & (flagged < 2075)).mean() >= 0.9


def test_uci_columns_get_the_physical_checks(tmp_path):
    frame = household(days=6, seed=3)
    swell = 262.0 + np.random.default_rng(1).normal(0, 0.5, 5)  # above 253 V, still moving
    frame.iloc[5000:5005, frame.columns.get_loc("voltage_v")] = swell.round(2)
    table = frame.rename(columns=UCI_NAMES)
    table.insert(0, "date_time", frame.index.strftime("%Y-%m-%d %H:%M:%S"))
    table.to_csv(tmp_path / "uci.csv", index=False)
    result = run_cli(["detect", "score-csv", str(tmp_path / "uci.csv"), "--time-column",
                      "date_time", "--columns", ",".join(UCI_NAMES.values()),
                      "--train-fraction", "0.5", "-o", str(tmp_path / "out.csv")])
    assert result.returncode == 0, result.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert (out.loc[5000:5004, "kind"] == "voltage_swell").all()
    assert (out.loc[5000:5004, "severity"] == "critical").all()


def test_a_clock_put_back_and_a_repeated_time_are_scored_with_one_warning(tmp_path):
    """A file whose clock goes back an hour, with one time given twice: every row is scored, the
    output keeps the file's order, and one warning counts both."""
    rng = np.random.default_rng(4)
    times = list(pd.date_range("2024-01-01", periods=5000, freq="5min"))
    times = times[:4000] + [t - pd.Timedelta(hours=1) for t in times[4000:]]
    times[100] = times[99]
    value = 10 + 5 * np.sin(np.arange(5000) * 2 * np.pi / 288) + rng.normal(0, 0.3, 5000)
    value[4500:4510] += 40  # a spike after the clock change is still found
    stamps = [t.strftime("%Y-%m-%d %H:%M:%S") for t in times]
    pd.DataFrame({"time": stamps, "load": value}).to_csv(tmp_path / "in.csv", index=False)
    result = run_cli(["detect", "score-csv", str(tmp_path / "in.csv"), "--time-column", "time",
                      "--columns", "load", "-o", str(tmp_path / "out.csv")])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, result.stderr
    assert ("1 row(s) whose time goes backwards (first at line 4002) and 1 row(s) with the time "
            "of the row before (first at line 102)") in warnings[0]
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out["time"]) == stamps
    assert out.loc[4500:4509, "is_anomaly"].all()
    assert out["anomaly_score"].idxmax() in range(4500, 4510)


def test_timestamps_with_utc_offsets_are_read_on_the_clock(tmp_path):
    """Local times with their offsets across a daylight-saving change are scored as the clock
    wrote them (the repeated hour by the time-order rule), and a file in UTC with 'Z' scores as
    the same file without it."""
    rng = np.random.default_rng(5)
    times = pd.date_range("2024-10-15", periods=5000, freq="5min", tz="Europe/Paris")
    value = 10 + 5 * np.sin(np.arange(5000) * 2 * np.pi / 288) + rng.normal(0, 0.3, 5000)
    value[4500:4510] += 40
    stamps = [t.isoformat() for t in times]
    assert stamps[0].endswith("+02:00") and stamps[-1].endswith("+01:00")
    scored, warned = {}, {}
    for name, column in (("local", stamps),
                         ("utc", [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times.tz_convert("UTC")]),
                         ("naive", [t.strftime("%Y-%m-%d %H:%M:%S") for t in times.tz_convert("UTC")])):
        pd.DataFrame({"time": column, "load": value}).to_csv(tmp_path / f"{name}.csv", index=False)
        result = run_cli(["detect", "score-csv", str(tmp_path / f"{name}.csv"), "--time-column",
                          "time", "--columns", "load", "-o", str(tmp_path / f"{name}.out.csv")])
        assert result.returncode == 0, result.stderr
        scored[name] = pd.read_csv(tmp_path / f"{name}.out.csv")
        warned[name] = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert not warned["utc"] and not warned["naive"]
    assert len(warned["local"]) == 1 and "1 row(s) whose time goes backwards" in warned["local"][0]
    local = scored["local"]
    assert list(local["time"]) == stamps
    assert local.loc[4500:4509, "is_anomaly"].all()
    pd.testing.assert_series_equal(scored["utc"]["anomaly_score"], scored["naive"]["anomaly_score"])


@pytest.mark.parametrize("content, args, message", [
    ("t,v\n0,1\n1,x\n", ["--columns", "v"], "in.csv:3: column 'v' has 'x'; expected a number"),
    ("t,v\n0,1\n", ["--columns", "w"], "no column 'w'; the header has t, v"),
    ("t,v\nmonday,1\n", ["--columns", "v"], "in.csv:2: column 't' has 'monday'; expected a timestamp"),
    ("t,v\n0,1\n", ["--columns", "v", "--train-fraction", "1.5"], "between 0 and 1, got 1.5"),
    ("t,v\n0,1\n", ["--columns", "v", "--max-age-days", "-1"], "--max-age-days must be 0 or more"),
    ("t,v\n0,1\n", ["--columns", "v", "--train-file", "{dir}/absent.csv"], "absent.csv: no such file"),
    ("t,v\n0,1\n", ["--columns", "v", "--train-file", "{dir}/in.csv"], "in.csv: cannot train on its 1 rows"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, content, args, message):
    (tmp_path / "in.csv").write_text(content)
    status = main(["detect", "score-csv", str(tmp_path / "in.csv"), "--time-column", "t",
                   *(arg.format(dir=tmp_path) for arg in args), "-o", str(tmp_path / "out.csv")])
    stderr = capsys.readouterr().err
    assert status == 1
    assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "out.csv").exists()

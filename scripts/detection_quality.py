#!/usr/bin/env python3
"""Detection quality on labelled data, default model against the iforest-raw baseline.

1. UCI household power with anomalies of every kind injected by ingest/anomalies.py: the
   history is cut into --segments evenly spaced stretches; in each the model trains on
   --train-days and scores the next --test-days, into which --per-kind anomalies of each kind
   are injected (after training, like a model retrained monthly). Event-level precision,
   recall, F1 and recall per kind over all segments. Then what the training month can tell
   apart at night: the injected unusual-time loads and the house's own quiet hours (before
   injection), each as a multiple of the most any training day drew over the same clock window
   on the unmetered power, and the F1 a detector flagging exactly those beyond a multiple would
   reach if it found every other kind and flagged nothing else.
2. ../shared/data: NAB artificialNoAnomaly (alarms after probation), artificialWithAnomaly
   and ambient_temperature_system_failure (windows hit, false positives, NAB standard-profile
   score; an alarm is the first reading of an incident, as users are alerted), UCR PowerDemand1 (distance of the top-scored point from the label). These go
   through `score-csv` exactly as a user would run it (train fraction 0.15, NAB's probation).
3. The TimeEval corpus (../shared/data/timeeval, 86 series of many shapes), one configuration
   for all: a series with an anomaly-free training file is scored as TimeEval does it, the model
   fitted on that file (`score-csv --train-file`) and every row of the test file scored (the
   two are separate recordings: joined, the step between them would be an unlabelled anomaly);
   a series without one is fitted on its first 15% and scored after that. Per series: top-1 (the highest score lies inside a
   labelled anomaly, +-100 points), event precision/recall/F1 at the default threshold, and the
   share of scored readings tied at the top score; over the corpus their mean, spread and the
   worst five series. The same for iforest-raw and a matrix-profile discord (stumpy, window =
   the series' period or 100, on the test file alone, flagged above the highest distance of the
   training file's own windows; without a training file on the whole series, flagged above the
   highest distance in its first 15%).

    .venv/bin/python scripts/detection_quality.py [--segments 6] [--skip-uci] [--skip-corpus] [--data DIR]
    pip install -e '.[quality]'   # stumpy, for the discord reference (else the corpus goes without it)
    .venv/bin/python scripts/detection_quality.py --cost   # CPU per reading of scoring UCI
    .venv/bin/python scripts/detection_quality.py --refits  # the whole UCI history, with and
        # without score-csv's refits by age: incidents per month and share of readings flagged
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.csvscore import score_csv  # noqa: E402
from detector.features import POWER, SUB_METERS, unmetered_kw  # noqa: E402
from detector.incident_runs import INCIDENT_GAP  # noqa: E402
from detector.models import DEFAULT_MODEL, RawIForest, make_model  # noqa: E402
from detector.rolling import sum_present  # noqa: E402
from ingest.anomalies import inject_many, quiet_hours  # noqa: E402
from ingest.datasets import uci_household_csv  # noqa: E402
from tests.support.detector_evaluation import event_scores, nab_normalised, nab_raw_score, runs  # noqa: E402
from wattwatch.fields import field_for  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = (DEFAULT_MODEL, RawIForest.algorithm)
DAY = 1440
DISCORD = "discord"
TOP1_MARGIN = 100  # points either side of a label that still count as hitting it
CEILING_MULTIPLES = (1.25, 1.5, 2.0, 3.0)


def _uci() -> pd.DataFrame:
    frame = pd.read_csv(uci_household_csv(), parse_dates=["date_time"], index_col="date_time")
    frame.columns = [field_for(c) for c in frame.columns]
    return frame


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scoring_cost(train_days: int) -> None:
    """CPU and wall time of the default model scoring the whole UCI history (fitted on its
    first train_days), per reading: the detector's share of a backfill."""
    frame = _uci()
    detector = make_model(DEFAULT_MODEL).fit(frame.iloc[:train_days * DAY])
    wall, cpu = time.perf_counter(), _cpu_seconds()
    detector.score(frame)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    print(f"Scoring cost: {len(frame):,} UCI readings in {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"({1e6 * cpu / len(frame):.2f} us CPU per reading, {len(frame) / wall:,.0f} readings/s)")


def _training_most(history: pd.Series, start: pd.Timestamp, span: pd.Timedelta) -> float:
    """The largest mean any day of `history` had over the clock window start..start + span."""
    days = pd.date_range(history.index[0].normalize(), history.index[-1].normalize(), freq="D")
    clock = start - start.normalize()
    return float(np.nanmax([history[day + clock:day + clock + span].mean() for day in days]))


def _unseen_in_training(part: pd.DataFrame, train: int, flags: np.ndarray,
                        truth: list[tuple[int, int]]) -> tuple[int, int]:
    """False events of one segment (flags and truth over its scored part), and how many of them
    drew more mean active power than any training day did over the same clock window: the
    house's own unusual use, which no label marks."""
    history = part[POWER].iloc[:train]
    false = unseen = 0
    for first, last in runs(flags, INCIDENT_GAP):
        if any(first <= end + 15 and last >= start for start, end in truth):
            continue
        event = part[POWER].iloc[train + first:train + last + 1]
        false += 1
        unseen += bool(event.mean() > _training_most(history, event.index[0],
                                                     event.index[-1] - event.index[0]))
    return false, unseen


def _unmetered(part: pd.DataFrame) -> pd.Series:
    metered = sum_present([part[column].to_numpy(float) for column in SUB_METERS])
    return pd.Series(unmetered_kw(part[POWER].to_numpy(float), metered, 1.0), index=part.index)


def _beyond_training(clean: pd.DataFrame, part: pd.DataFrame, train: int,
                     injected: list) -> tuple[list[float], pd.Series]:
    """Night loads against the training month, on the unmetered power: each injected
    unusual-time load's mean as a multiple of the most any training day drew over the same
    clock window; and the same for each whole hour at the house's quiet hours (the injector's)
    in the scored part before injection, by the hour's start."""
    before, after = _unmetered(clean), _unmetered(part)
    history = before.iloc[:train]
    loads = [after[i.start:i.end].mean() / _training_most(history, i.start, i.end - i.start)
             for i in injected if i.kind == "unusual_time"]
    quiet = quiet_hours(clean)
    hours = [hour for hour in before.index[train:].floor("h").unique()
             if hour.hour in quiet and hour >= before.index[train]]
    span = pd.Timedelta(minutes=59)
    own = [before[hour:hour + span].mean() / _training_most(history, hour, span) for hour in hours]
    return loads, pd.Series(own, index=pd.DatetimeIndex(hours), dtype=float)


def _ceiling_report(loads: list[float], own: pd.Series, others: int) -> None:
    """For multiples m: the loads at least m times the training month's most, the house's own
    quiet hours as far beyond it (hours that follow one another are one event), and the F1 a
    detector that flags exactly those would reach with every other kind found and nothing else
    flagged."""
    print("  unusual-time loads against the training month's most at the same clock window "
          "(unmetered power; a night load judged by that month alone):")
    for multiple in CEILING_MULTIPLES:
        caught = sum(ratio >= multiple for ratio in loads)
        beyond = own.index[own.to_numpy() >= multiple]
        hours = len(beyond)
        events = int((~beyond.isin(beyond + pd.Timedelta(hours=1))).sum())
        found = others + caught
        f1 = 2 * found / (2 * found + events + len(loads) - caught)
        print(f"    {multiple:4.2f}x or more: {caught} of {len(loads)} injected loads; the house's own "
              f"quiet hours {hours} ({events} events); F1 at most {f1:.3f}")


def refits_by_month() -> None:
    """The whole UCI history through score-csv (default train fraction) with one model and with
    refits by age: anomalous incidents (onsets) per month and the share of readings flagged."""
    source = uci_household_csv()
    columns = list(pd.read_csv(source, nrows=0).columns)
    months = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, age in (("one model", 0.0), ("refits", None)):
            kwargs = {} if age is None else {"max_age_days": age}
            result = score_csv(source, Path(tmp) / "out.csv", columns[0], columns[1:], **kwargs)
            flags = result["is_anomaly"].to_numpy(bool)
            onsets = pd.Series(_onsets(flags), index=result.index)
            months[label] = onsets.groupby(onsets.index.to_period("M")).sum()
            print(f"UCI whole history, {label}: {int(onsets.sum())} incidents, "
                  f"{flags.mean():.2%} of {len(flags):,} readings flagged")
    table = pd.DataFrame(months)
    print("Incidents per month:")
    print(table.to_string())


def uci_quality(segments: int, train_days: int, test_days: int, per_kind: int) -> None:
    frame = _uci()
    train, test = train_days * DAY, test_days * DAY
    starts = np.linspace(0, len(frame) - train - test, segments).astype(int)
    flags = {name: [] for name in MODELS}
    unseen = {name: np.zeros(2, dtype=int) for name in MODELS}
    truth, loads, own = [], [], []
    for number, start in enumerate(starts):
        clean = frame.iloc[start:start + train + test]
        part = clean.copy()
        injected = inject_many(part, np.random.default_rng(number), per_kind=per_kind,
                               skip=train + 60)
        segment_loads, segment_own = _beyond_training(clean, part, train, injected)
        loads += segment_loads
        own.append(segment_own)
        offset = number * test
        truth += [(part.index.get_loc(i.start) - train + offset,
                   part.index.get_loc(i.end) - train + offset, i.kind) for i in injected]
        for name in MODELS:
            detector = make_model(name).fit(part.iloc[:train])
            flags[name].append(detector.score(part)["is_anomaly"].to_numpy()[train:])
            unseen[name] += _unseen_in_training(part, train, flags[name][-1], [
                (part.index.get_loc(i.start) - train, part.index.get_loc(i.end) - train)
                for i in injected])
    print(f"UCI: {segments} segments x ({train_days} days training, {test_days} days scored), "
          f"{len(truth)} injected anomalies ({per_kind} per kind per segment)")
    for name in MODELS:
        scores = event_scores(np.concatenate(flags[name]), truth)
        print(f"  {name:17s} precision {scores.precision:.3f}  recall {scores.recall:.3f}  "
              f"F1 {scores.f1:.3f}  false events {scores.false_events}")
        print("    recall per kind: " + ", ".join(
            f"{kind} {value:.2f}" for kind, value in scores.recall_by_kind.items()))
        print(f"    false events above every training day's mean power over the same clock "
              f"window (the house's own unusual use, unlabelled): {unseen[name][1]} of "
              f"{unseen[name][0]}")
    _ceiling_report(loads, pd.concat(own), len(truth) - len(loads))


def _score_file(path: Path, column: str, train_fraction: float) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        score_csv(path, Path(tmp) / "out.csv", "timestamp", [column], train_fraction)
        return pd.read_csv(Path(tmp) / "out.csv")


def _onsets(flags: np.ndarray) -> np.ndarray:
    """The first reading of each incident (anomalous readings merged as `detect run` merges
    them): the alarms a user receives."""
    onsets = np.zeros(len(flags), dtype=bool)
    onsets[[first for first, _last in runs(flags, INCIDENT_GAP)]] = True
    return onsets


def _window_positions(times: pd.Series, windows: list) -> list[tuple[int, int]]:
    stamps = pd.to_datetime(times)
    return [(int(np.searchsorted(stamps, pd.Timestamp(a))),
             int(np.searchsorted(stamps, pd.Timestamp(b), side="right")) - 1) for a, b in windows]


def _nab_threshold(files: list[tuple[np.ndarray, list, int]], windows: int) -> tuple[float, float]:
    """NAB's optimiser: the one threshold on the evidence, over all files, that maximises the
    normalised standard-profile score (each reading at or above it is a detection); among the
    distinct evidence values seen after probation (every 1000th of them when there are more)."""
    seen = np.unique(np.concatenate([evidence[probation:] for evidence, _, probation in files]))
    candidates = seen[::max(1, len(seen) // 1000)]
    scores = [nab_normalised(sum(nab_raw_score(evidence >= t, positions, probation)
                                 for evidence, positions, probation in files), windows)
              for t in candidates]
    best = int(np.argmax(scores))
    return float(candidates[best]), float(scores[best])


def shared_quality(shared: Path) -> None:
    windows = json.loads((shared / "nab" / "combined_windows.json").read_text())
    print("NAB (train fraction 0.15 = NAB's probation; alarms counted after it):")
    corpus_raw, corpus_windows = 0.0, 0
    swept = []  # (evidence, windows, probation) of each file, for NAB's threshold protocol
    for name in sorted(windows):
        if not name.startswith(("artificial", "realKnownCause/ambient_temperature")):
            continue
        scored = _score_file(shared / "nab" / "data" / name, "value", 0.15)
        probation = min(int(0.15 * len(scored)), 750)
        flags = _onsets(scored["is_anomaly"].to_numpy())
        positions = _window_positions(scored["timestamp"], windows[name])
        alarms = np.flatnonzero(flags[probation:]) + probation
        hit = [bool(((alarms >= a) & (alarms <= b)).any()) for a, b in positions]
        outside = sum(not any(a <= i <= b for a, b in positions) for i in alarms)
        raw = nab_raw_score(flags, positions, probation)
        swept.append((scored["anomaly_evidence"].to_numpy(), positions, probation))
        corpus_raw += raw
        corpus_windows += len(positions)
        print(f"  {name:55s} windows hit {sum(hit)}/{len(hit)}  alarms outside windows "
              f"{outside}  NAB raw {raw:+.2f}")
    print(f"  NAB standard-profile score over the files with windows: "
          f"{nab_normalised(corpus_raw, corpus_windows):.1f} (perfect 100, never firing 0)")
    threshold, best = _nab_threshold(swept, corpus_windows)
    print(f"  NAB's own protocol (every reading at or above one threshold on anomaly_evidence is a "
          f"detection, the threshold that maximises the score over these files): {best:.1f} "
          f"at evidence {threshold:.2f}")

    power = shared / "power" / "152_UCR_Anomaly_PowerDemand1.test.csv"
    train_rows = len(pd.read_csv(power.with_name(power.name.replace("test", "train"))))
    total = len(pd.read_csv(power))
    scored = _score_file(power, "value", train_rows / total)
    labelled = np.flatnonzero(scored["is_anomaly_original"].to_numpy() == 1)
    top = int(scored["anomaly_score"].to_numpy().argmax())
    distance = 0 if labelled[0] <= top <= labelled[-1] else int(
        min(abs(top - labelled[0]), abs(top - labelled[-1])))
    flagged = np.flatnonzero(scored["is_anomaly"].to_numpy())
    inside = ((flagged >= labelled[0]) & (flagged <= labelled[-1])).sum()
    print(f"UCR PowerDemand1 (trained on its {train_rows}-row anomaly-free prefix): label "
          f"{labelled[0]}..{labelled[-1]}; top-scored point {top} (distance {distance}); "
          f"flagged {len(flagged)} points, {inside} inside the label, top score inside the "
          f"label {scored['anomaly_score'].iloc[labelled[0]:labelled[-1] + 1].max():.1f} "
          f"against {scored['anomaly_score'].max():.1f} overall")


@dataclass
class SeriesQuality:
    name: str
    top1: bool
    precision: float
    recall: float
    f1: float
    tied_at_top: float


@dataclass
class CorpusSeries:
    name: str
    train: pd.DataFrame | None  # the anomaly-free training file, when there is one
    test: pd.DataFrame          # timestamp, value, is_anomaly
    window: int                 # the discord's window: the series' period, else 100


def _corpus_series(timeeval: Path) -> list[CorpusSeries]:
    listing = pd.read_csv(timeeval / "datasets.csv")

    def read(path: str) -> pd.DataFrame:
        frame = pd.read_csv(timeeval / path.removeprefix("TimeEval/"))
        frame.columns = ["timestamp", "value", "is_anomaly"]  # some files call it value-0
        frame["timestamp"] = np.arange(len(frame))
        return frame

    series = []
    for row in listing.itertuples():
        period = row.period_size if row.period_size == row.period_size else 100
        series.append(CorpusSeries(
            f"{row.collection_name}/{row.dataset_name}",
            read(row.train_path) if isinstance(row.train_path, str) else None,
            read(row.test_path), int(min(max(period, 8), 1000))))
    return series


def _discord(values: np.ndarray, window: int) -> np.ndarray:
    """Matrix-profile discord scores: each window's distance to the nearest other window, at
    the window's centre."""
    import stumpy

    profile = stumpy.stump(np.nan_to_num(values.astype(float)), window)[:, 0].astype(float)
    scores = np.full(len(values), 0.0)
    scores[window // 2:window // 2 + len(profile)] = profile
    return scores


def _discord_flags(series: CorpusSeries, train_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Discord scores and flags of the scored rows: above the highest distance of training."""
    scores = _discord(series.test["value"].to_numpy(), series.window)
    if series.train is not None:
        seen = _discord(series.train["value"].to_numpy(), series.window)
    else:
        scores, seen = scores[train_rows:], scores[:train_rows]
    finite = seen[np.isfinite(seen)]
    ceiling = finite.max() if len(finite) else np.inf
    return scores, np.isfinite(scores) & (scores > ceiling)


def _scored(series: CorpusSeries, method: str, tmp: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores and flags of the scored rows of a series under a method."""
    source, reference = tmp / "series.csv", tmp / "reference.csv"
    series.test[["timestamp", "value"]].to_csv(source, index=False)
    train_rows = 0 if series.train is not None else int(0.15 * len(series.test))
    labels = series.test["is_anomaly"].to_numpy()[train_rows:]
    if method == DISCORD:
        return labels, *_discord_flags(series, train_rows)
    if series.train is not None:
        series.train[["timestamp", "value"]].to_csv(reference, index=False)
        result = score_csv(source, tmp / "out.csv", "timestamp", ["value"], model=method,
                           train_file=reference)
    else:
        result = score_csv(source, tmp / "out.csv", "timestamp", ["value"],
                           train_rows / len(series.test), model=method)
    return (labels, result["score"].to_numpy()[train_rows:],
            result["is_anomaly"].to_numpy()[train_rows:])


def _series_quality(name: str, labels: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> SeriesQuality:
    """Quality of one series' scored part (labels, scores and flags after training)."""
    labelled = runs(labels == 1)
    scores = np.nan_to_num(scores.astype(float), nan=-np.inf)
    top = int(scores.argmax())
    top1 = any(first - TOP1_MARGIN <= top <= last + TOP1_MARGIN for first, last in labelled)
    events = event_scores(flags.astype(bool), [(a, b, "labelled") for a, b in labelled])
    tied = float(np.mean(scores == scores.max()))
    return SeriesQuality(name, top1, events.precision, events.recall, events.f1, tied)


def corpus_quality(timeeval: Path) -> None:
    try:
        import stumpy  # noqa: F401
        methods = (*MODELS, DISCORD)
    except ImportError:
        methods = MODELS
        print("TimeEval corpus: stumpy is not installed, so no discord reference")
    series = _corpus_series(timeeval)
    results: dict[str, list[SeriesQuality]] = {method: [] for method in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for one in series:
            for method in methods:
                results[method].append(_series_quality(one.name, *_scored(one, method, Path(tmp))))
    print(f"TimeEval corpus: {len(series)} series, one configuration (fitted on the anomaly-free "
          f"training file, scoring the test file, where there is one; else on the first 15%)")
    for method in methods:
        table = pd.DataFrame([vars(r) for r in results[method]]).set_index("name")
        spread = table[["top1", "precision", "recall", "f1"]].astype(float).agg(["mean", "std"])
        print(f"  {method:17s} top-1 {spread.loc['mean', 'top1']:.2f}  precision "
              f"{spread.loc['mean', 'precision']:.3f}  recall {spread.loc['mean', 'recall']:.3f}  "
              f"F1 {spread.loc['mean', 'f1']:.3f} (sd {spread.loc['std', 'f1']:.3f})  "
              f"tied at the top: median {table['tied_at_top'].median():.4%}, "
              f"max {table['tied_at_top'].max():.2%}, series at 0.1% or more "
              f"{int((table['tied_at_top'] >= 0.001).sum())}")
        for collection, part in table.groupby(table.index.str.split("/").str[0]):
            print(f"    {collection:20s} {len(part):3d} series  top-1 {part['top1'].mean():.2f}  "
                  f"F1 {part['f1'].mean():.3f}")
        worst = table.sort_values(["f1", "top1"]).head(5)
        print("    worst five: " + "; ".join(f"{n} (F1 {r.f1:.2f}, top-1 {'yes' if r.top1 else 'no'})"
                                            for n, r in worst.iterrows()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=6)
    parser.add_argument("--train-days", type=int, default=28)
    parser.add_argument("--test-days", type=int, default=28)
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--skip-uci", action="store_true")
    parser.add_argument("--skip-corpus", action="store_true", help="without the TimeEval corpus")
    parser.add_argument("--only-corpus", action="store_true", help="only the TimeEval corpus")
    parser.add_argument("--cost", action="store_true",
                        help="only time the default model scoring the whole UCI history")
    parser.add_argument("--refits", action="store_true",
                        help="only the whole UCI history with and without score-csv's refits")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the labelled data directory (default: ../shared/data)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="A large number of values in `P`")  # flat stretches
    if args.cost:
        scoring_cost(args.train_days)
        return
    if args.refits:
        refits_by_month()
        return
    if not args.only_corpus:
        if not args.skip_uci:
            uci_quality(args.segments, args.train_days, args.test_days, args.per_kind)
        shared_quality(args.data)
    if not args.skip_corpus:
        corpus_quality(args.data / "timeeval")


if __name__ == "__main__":
    main()

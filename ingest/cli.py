"""`wattwatch ingest ...`: file (bulk load), replay (a file as if live), simulate (synthetic
meters), mqtt (readings published to a broker)."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from wattwatch import logs
from wattwatch.arguments import TIME_HELP, timestamp
from wattwatch.errors import WattwatchError
from wattwatch.metrics import DEFAULT_PORTS
from wattwatch.settings import load_settings

log = logs.get("ingest")


def _mapping(text: str) -> tuple[str, str]:
    column, sep, target = text.partition("=")
    if not sep or not column or not target:
        raise argparse.ArgumentTypeError(f"expected COLUMN=FIELD, e.g. kw=active_power_kw, got {text!r}")
    return column, target


def _header(text: str) -> bool | None:
    choices = {"auto": None, "yes": True, "no": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, yes or no, got {text!r}")
    return choices[text]


def _separator(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t"}.get(text, text)
    if value not in (",", ";", "\t"):
        raise argparse.ArgumentTypeError(f"expected ',', ';' or tab, got {text!r}")
    return value


def _metrics(args: argparse.Namespace, settings):
    """Serve /metrics when a port was given (0 picks a free one); None otherwise."""
    if args.metrics_port is None:
        return None
    from wattwatch.metrics import serve_metrics
    from ingest.metrics import IngestMetrics

    metrics = IngestMetrics()
    bound = serve_metrics(metrics.registry, args.metrics_port, settings.metrics_address)
    metrics.url = f"http://{settings.metrics_address}:{bound}/metrics"
    return metrics


def layout_options(args: argparse.Namespace):
    from ingest.layout import LayoutOptions

    return LayoutOptions(separator=args.sep, header=args.header, time_column=args.time_column,
                         meter_column=args.meter_column, mapping=dict(args.map or []),
                         time_format=args.time_format)


def cmd_file(args: argparse.Namespace) -> None:
    from ingest.load import LoadOptions, load_file
    from ingest.progress import Progress
    from ingest.source import check_file
    from timescale.connect import connect

    settings = load_settings()
    metrics = _metrics(args, settings)
    for path in args.paths:
        check_file(path)
    with connect(settings) as conn:
        summaries = []
        for path in args.paths:
            progress = Progress()
            options = LoadOptions(meter=args.meter, timezone=args.timezone, layout=layout_options(args))
            summary = load_file(conn, path, options, settings, metrics, on_batch=progress)
            progress.done()
            summaries.append(summary)
            if not args.json:
                print(summary.format())
    if args.json:
        print(json.dumps([s.as_dict() for s in summaries] if len(summaries) > 1
                         else summaries[0].as_dict(), indent=2))
    _fail_if_ended_early(summaries)


def _fail_if_ended_early(summaries) -> None:
    """Exit status 1, after the summaries, when a file was not read whole (a broken stream)."""
    early = [f"{s.source}: {s.ended_early}" for s in summaries if s.ended_early]
    if early:
        raise WattwatchError("; ".join(early) + " (the rows before it are loaded or rejected, "
                             "see the summary)")


def _stop_on_signals():
    """An event set by SIGINT or SIGTERM, so a live load ends after writing what it holds."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _report(summary, as_json: bool) -> None:
    print(json.dumps(summary.as_dict(), indent=2) if as_json else summary.format())


def cmd_replay(args: argparse.Namespace) -> None:
    from ingest.load import LoadOptions
    from ingest.replay import replay_file
    from ingest.source import check_file
    from timescale.connect import connect

    settings = load_settings()
    check_file(args.path)
    metrics = _metrics(args, settings)
    stop = _stop_on_signals()
    options = LoadOptions(meter=args.meter, timezone=args.timezone, layout=layout_options(args))
    with connect(settings) as conn:
        _log_start(conn, "replay", file=args.path, meter=args.meter, speed=args.speed,
                   history_days=args.history_days, metrics_port=args.metrics_port)
        summary = replay_file(conn, args.path, options, settings, args.speed,
                              reconnect=lambda: connect(settings), metrics=metrics, stop=stop,
                              history_days=args.history_days)
    _report(summary, args.json)
    _fail_if_ended_early([summary])


def cmd_simulate(args: argparse.Namespace) -> None:
    from ingest.parse import meter_id_problem
    from ingest.simulate import simulate_history, simulate_live
    from ingest.synthetic import aligned, meter_id
    from timescale.connect import connect

    if problem := meter_id_problem(meter_id(args.prefix, args.meters - 1)):  # the longest id
        raise WattwatchError(f"--prefix: {problem}")
    if (args.start is None) != (args.end is None):
        raise WattwatchError("--from and --to go together: both for a history, neither for live")
    if args.start is not None and args.history_days:
        raise WattwatchError("--history-days is for live mode; --from/--to already write a history")
    if args.start is not None and args.end <= args.start:
        raise WattwatchError(f"--to {args.end.isoformat()} is not after --from {args.start.isoformat()}")
    if args.mqtt:
        _simulate_to_broker(args)
        return
    settings = load_settings()
    if args.start is None and args.metrics_port is None:
        args.metrics_port = DEFAULT_PORTS["ingest"]
    metrics = _metrics(args, settings)
    common = dict(meters=args.meters, step_seconds=args.interval, seed=args.seed,
                  prefix=args.prefix, anomaly_rate=args.anomaly_rate, metrics=metrics)
    with connect(settings) as conn:
        if args.start is not None:
            summary = simulate_history(conn, settings, start=args.start, end=args.end, **common)
        else:
            _log_start(conn, "simulate", meters=args.meters, interval_s=args.interval,
                       history_days=args.history_days, anomaly_rate=args.anomaly_rate,
                       metrics_port=args.metrics_port)
            since = None
            if args.history_days:
                since = aligned(datetime.now(timezone.utc), args.interval)
                history = simulate_history(conn, settings, start=since - timedelta(days=args.history_days),
                                           end=since, **common)
                log.info("history of %g days stored: %s", args.history_days, history.format().splitlines()[0])
            summary = simulate_live(conn, settings, reconnect=lambda: connect(settings),
                                    stop=_stop_on_signals(), duration=args.duration, since=since, **common)
    _report(summary, args.json)


def _simulate_to_broker(args: argparse.Namespace) -> None:
    """simulate --mqtt: the live readings (and --history-days, step by step) go to the broker;
    the meters' names and the anomaly labels to the database."""
    from ingest.broker import Broker, connect_async, make_client, untrusted_certificate
    from ingest.publisher import Publisher
    from ingest.simulate import source_of
    from ingest.simulate_mqtt import publish_live
    from ingest.synthetic import aligned, record_injections, register_simulated_meters
    from timescale.connect import connect

    if args.start is not None:
        raise WattwatchError("--mqtt publishes live readings; --from/--to write a history to the "
                             "database: use one or the other")
    if args.metrics_port is not None:
        raise WattwatchError("--metrics-port: with --mqtt, `wattwatch ingest mqtt` serves the metrics")
    settings = load_settings()
    broker = Broker.parse(args.mqtt)
    client = make_client(settings, broker, "")
    publisher = Publisher(client)

    def connect_failed(client, userdata) -> None:
        if problem := untrusted_certificate(client, broker):
            publisher.fail(problem)

    client.on_connect_fail = connect_failed
    connect_async(client, broker)
    client.loop_start()
    log.info("ingest simulate publishing to %s: meters=%d, interval_s=%d, history_days=%g, "
             "anomaly_rate=%g", broker, args.meters, args.interval, args.history_days,
             args.anomaly_rate)
    since = None
    if args.history_days:
        since = aligned(datetime.now(timezone.utc), args.interval) - timedelta(days=args.history_days)
    started = time.perf_counter()
    try:
        with connect(settings) as conn:
            register_simulated_meters(conn, args.prefix, args.meters)
            published = publish_live(
                publisher, lambda meter, injections: record_injections(
                    conn, meter, injections, source_of(args.seed)),
                stop=_stop_on_signals(), meters=args.meters, step_seconds=args.interval,
                seed=args.seed, prefix=args.prefix, anomaly_rate=args.anomaly_rate,
                duration=args.duration, since=since)
    finally:
        client.disconnect()
        client.loop_stop()
    seconds = time.perf_counter() - started
    summary = {"broker": str(broker), "published": published, "seconds": round(seconds, 3)}
    print(json.dumps(summary, indent=2) if args.json
          else f"{published:,} readings published to {broker} in {seconds:.1f} s")


def cmd_mqtt(args: argparse.Namespace) -> None:
    from ingest.batches import BatchLoader
    from ingest.broker import broker_url, make_client
    from ingest.mqtt import MqttIngest
    from ingest.mqtt_metrics import MqttMetrics
    from ingest.payloads import PayloadOptions, PayloadParser
    from ingest.ranges import plausible_ranges
    from ingest.summary import Summary
    from timescale.connect import connect

    settings = load_settings()
    broker = broker_url(args.broker, settings)
    metrics = _metrics(args, settings)
    options = PayloadOptions(mapping=dict(args.map or []), meter_level=args.meter_from_topic,
                             meter_key=args.meter_key, time_key=args.time_key)
    parser = PayloadParser(options, plausible_ranges(settings),
                           timedelta(seconds=settings.ingest_max_future_seconds))
    client_id = args.client_id or settings.mqtt_client_id
    stop = _stop_on_signals()
    with connect(settings) as conn:
        _log_start(conn, "mqtt", broker=broker, topics=",".join(args.topic), client_id=client_id,
                   protocol=settings.mqtt_protocol, batch_rows=settings.ingest_batch_rows,
                   metrics=metrics.url if metrics else None)
        summary = Summary(source=str(broker))
        loader = BatchLoader(conn, str(broker), summary, settings.ingest_batch_rows,
                             metrics=metrics, reconnect=lambda: connect(settings))
        client = make_client(settings, broker, client_id, manual_ack=True, persistent=True)
        started = time.perf_counter()
        MqttIngest(client, broker, args.topic, parser, loader,
                   MqttMetrics(metrics.registry) if metrics else None).run(stop)
        summary.seconds = time.perf_counter() - started
    _report(summary, args.json)


def _log_start(conn, service: str, **key) -> None:
    """The start-up line of a live ingest: version, database role, key settings."""
    role = conn.execute("SELECT current_user").fetchone()[0]
    conn.commit()
    logs.startup(log, f"ingest {service}", role, **key)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of days, 0 or more, got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}")
    return value


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meter", help="meter id for files without a meter column")
    parser.add_argument("--timezone", default="UTC",
                        help="IANA zone of naive timestamps (default UTC); see README for the "
                        "daylight-saving rule")
    parser.add_argument("--sep", type=_separator, help="separator: ',', ';' or tab (default: detected)")
    parser.add_argument("--header", type=_header, default=None, metavar="auto|yes|no",
                        help="whether the first line is a header (default: detected)")
    parser.add_argument("--time-column", metavar="COL",
                        help="time column name or 1-based number; DATE+TIME joins two columns "
                        "(default: time/timestamp/date_time, or Date+Time)")
    parser.add_argument("--meter-column", metavar="COL", help="meter column name or number "
                        "(default: a column named meter or meter_id)")
    parser.add_argument("--map", type=_mapping, action="append", metavar="COLUMN=FIELD",
                        help="read COLUMN as FIELD (e.g. kw=active_power_kw); UCI and our own "
                        "column names are recognised without it")
    parser.add_argument("--time-format", metavar="FMT",
                        help="iso, dayfirst, epoch or a strptime format (default: detected)")


def register(commands: argparse._SubParsersAction) -> None:
    ingest = commands.add_parser("ingest", help="load readings from files, replay them, simulate meters, MQTT",
                                 description="Load readings into TimescaleDB.")
    sub = ingest.add_subparsers(dest="ingest_command", metavar="INGEST_COMMAND", required=True)
    file = sub.add_parser(
        "file", help="bulk-load CSV files (UCI or generic, plain or gzip)",
        description="Bulk-load files with COPY, in batches. Every row is loaded, skipped as a "
        "duplicate or recorded in ingest_rejects with its reason; loading a file again changes "
        "nothing. Exit status 0 when the files were read, even with rejects; 1 when a file "
        "could not be read, or ended early (a broken gzip stream: the summary is printed first).")
    file.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_layout_arguments(file)
    file.add_argument("--json", action="store_true", help="print the summary as JSON")
    file.add_argument("--metrics-port", type=int, metavar="PORT",
                      help="serve Prometheus metrics on this port while loading")
    file.set_defaults(func=cmd_file)

    replay = sub.add_parser(
        "replay", help="stream a file as if its meters were live",
        description="Stream a file into readings as if live: the first reading is stored at the "
        "start, later ones at start + (time - first time) / speed, each written when its moment "
        "comes. Reconnects with backoff when the database goes away; Ctrl-C stops cleanly.")
    replay.add_argument("path", type=Path, metavar="PATH")
    replay.add_argument("--speed", type=_positive(float), default=1.0,
                        help="N times real time (default 1)")
    replay.add_argument("--history-days", type=_non_negative, default=0, metavar="DAYS",
                        help="store the file's first DAYS at once, ending now, then replay the "
                        "rest live (default 0: all live)")
    add_layout_arguments(replay)
    replay.add_argument("--json", action="store_true", help="print the closing summary as JSON")
    replay.add_argument("--metrics-port", type=int, default=DEFAULT_PORTS["ingest"], metavar="PORT",
                        help=f"Prometheus metrics port (default {DEFAULT_PORTS['ingest']}; 0: any free port)")
    replay.set_defaults(func=cmd_replay)

    simulate = sub.add_parser(
        "simulate", help="synthetic meters, live or as a labelled history",
        description="Synthetic meters with daily and weekly cycles, appliance events, noise and "
        "injected anomalies of every kind, recorded in injected_anomalies. Live (default): one "
        "reading per meter every --interval seconds until stopped. With --from/--to: that history "
        "at bulk speed. The same --seed gives the same data in both modes.")
    simulate.add_argument("--meters", type=_positive(int), default=10, help="number of meters (default 10)")
    simulate.add_argument("--interval", type=_positive(int), default=60, metavar="S",
                          help="seconds between readings (default 60)")
    simulate.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    simulate.add_argument("--from", dest="start", type=timestamp, metavar="TS",
                          help=f"start of a history to write: {TIME_HELP}")
    simulate.add_argument("--to", dest="end", type=timestamp, metavar="TS",
                          help="end of that history (same formats as --from)")
    simulate.add_argument("--anomaly-rate", type=_rate, default=0.2, metavar="P",
                          help="probability that a meter's block of 1440 readings holds an anomaly (default 0.2)")
    simulate.add_argument("--prefix", default="sim", help="meter id prefix (default sim: sim-0000, ...)")
    simulate.add_argument("--history-days", type=_non_negative, default=0, metavar="DAYS",
                          help="live mode: first store the DAYS before now at bulk speed, then "
                          "go on live from there (default 0)")
    simulate.add_argument("--duration", type=_positive(float), metavar="SECONDS",
                          help="live mode: stop after this many seconds (default: run until stopped)")
    simulate.add_argument("--mqtt", metavar="URL",
                          help="live mode: publish the readings as JSON to this broker "
                          "(mqtt://host:1883, user and password from WATTWATCH_MQTT_*) on "
                          "meters/<id>/readings instead of writing them to the database (the "
                          "meters' names and anomaly labels are still written there)")
    simulate.add_argument("--json", action="store_true", help="print the closing summary as JSON")
    simulate.add_argument("--metrics-port", type=int, metavar="PORT",
                          help=f"Prometheus metrics port (live default {DEFAULT_PORTS['ingest']}; 0: any free port)")
    simulate.set_defaults(func=cmd_simulate)

    mqtt = sub.add_parser(
        "mqtt", help="subscribe to an MQTT broker and store the readings published there",
        description="Subscribe to MQTT topics (QoS 1, a persistent session under a fixed client "
        "id) and store each message's readings: a JSON object, or an array of them, with our "
        "field names, UCI's or --map'ed keys. A message is acknowledged only once its rows or "
        "rejects are committed, so nothing is lost when this process, the broker or the "
        "database stops; a message delivered again counts as duplicates. A payload that cannot "
        "be read is an invalid_payload reject with its topic. The user, password and CA file "
        "come from WATTWATCH_MQTT_*. Ctrl-C stops cleanly.")
    mqtt.add_argument("--broker", metavar="URL",
                      help="mqtt://host:1883 or mqtts://host:8883 (default WATTWATCH_MQTT_URL)")
    mqtt.add_argument("--topic", action="append", required=True, metavar="FILTER",
                      help="topic filter to subscribe to, e.g. 'meters/+/readings' (repeatable)")
    mqtt.add_argument("--meter-from-topic", type=_positive(int), metavar="N",
                      help="take the meter id from the topic's Nth level (1-based), e.g. 2 for "
                      "meters/<id>/readings (default: the payload's meter_id or meter key)")
    mqtt.add_argument("--meter-key", metavar="KEY", help="payload key of the meter id")
    mqtt.add_argument("--time-key", metavar="KEY",
                      help="payload key of the time, ISO 8601 (naive: UTC) or epoch seconds or "
                      "milliseconds (default: time, timestamp, ts or date_time; absent: the "
                      "time the message arrived)")
    mqtt.add_argument("--map", type=_mapping, action="append", metavar="KEY=FIELD",
                      help="read KEY as FIELD (e.g. power=active_power_kw); UCI and our own "
                      "names are recognised without it")
    mqtt.add_argument("--client-id", metavar="ID",
                      help="client id of the persistent session (default WATTWATCH_MQTT_CLIENT_ID)")
    mqtt.add_argument("--json", action="store_true", help="print the closing summary as JSON")
    mqtt.add_argument("--metrics-port", type=int, default=DEFAULT_PORTS["ingest"], metavar="PORT",
                      help=f"Prometheus metrics port (default {DEFAULT_PORTS['ingest']}; 0: any free port)")
    mqtt.set_defaults(func=cmd_mqtt)

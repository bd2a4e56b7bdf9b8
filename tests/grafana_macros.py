"""What Grafana does to a PostgreSQL panel query before the server sees it, so the tests and
scripts/bench_dashboards.py can run the exact SQL Grafana would.

Template variables as the SQL data sources' frontend formats them (a multi-value or include-all
variable becomes quoted literals joined by commas; a single-value one is inserted with its quotes
doubled), then `$__interval_ms`, `$__interval`, `$__unixEpochFrom()`, `$__unixEpochTo()`, then the
macros of Grafana's pkg/tsdb/grafana-postgresql-datasource/macros.go. Anything else is an error:
a query using a macro this module does not know is a query the tests cannot vouch for.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")  # Grafana's own pattern: no ')' in arguments
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
         "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")


def format_interval(interval: timedelta) -> str:
    """Grafana's gtime.FormatInterval: the interval floored to its largest whole unit."""
    ms = interval // timedelta(milliseconds=1)
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_interval(text: str) -> timedelta:
    match = INTERVAL.match(text.strip().strip("'\""))
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return float(match[1]) * UNITS[match[2]]


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return f"'{text}'"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def substitute_variables(sql: str, variables: dict[str, list[str] | str]) -> str:
    """Template variables: list values (multi/include-all) as quoted literals, strings raw."""

    def replace(match: re.Match) -> str:
        name = match[1] or match[2]
        if name.startswith("__"):
            return match[0]  # a built-in: handled by expand()
        if name not in variables:
            raise KeyError(f"query uses undefined template variable ${name}")
        value = variables[name]
        if isinstance(value, str):
            return value.replace("'", "''")
        return ",".join(_quote(v) for v in value)

    return VARIABLE.sub(replace, sql)


def expand(sql: str, start: datetime, end: datetime, interval: timedelta,
           variables: dict[str, list[str] | str] | None = None, timescaledb: bool = True) -> str:
    """The SQL Grafana sends for `sql` over [start, end] at `interval`."""
    sql = substitute_variables(sql, variables or {})
    sql = sql.replace("$__interval_ms", str(interval // timedelta(milliseconds=1)))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(end.timestamp())))

    def macro(match: re.Match) -> str:
        name, args = match[1], [a.strip() for a in match[2].split(",")]
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) AS "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN {_rfc3339(start)} AND {_rfc3339(end)}"
        if name == "__timeFrom":
            return _rfc3339(start)
        if name == "__timeTo":
            return _rfc3339(end)
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) != 2:
                raise ValueError(f"${name} takes a column and an interval (fill is not used here), got {args}")
            seconds = parse_interval(args[1]).total_seconds()
            group = (f"time_bucket('{seconds:.3f}s',{args[0]})" if timescaledb else
                     f"floor(extract(epoch from {args[0]})/{seconds:g})*{seconds:g}")
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        raise ValueError(f"unknown Grafana macro ${name}")

    expanded = MACRO.sub(macro, sql)
    if "$" in re.sub(r"\$\$|\$\d|'[^']*'", "", expanded):
        raise ValueError(f"unexpanded '$' left in query: {expanded}")
    return expanded

"""Shared Prometheus helpers: every wattwatch service serves /metrics the same way.

Metric names start with `wattwatch_`, use base units and the _total/_seconds/_bytes/_ratio
suffixes; labels stay bounded (meter ids yes, raw values, timestamps and error texts never).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from wattwatch.errors import WattwatchError

# The port each service listens on by default; prometheus/targets/*.json use the same numbers.
DEFAULT_PORTS = {"ingest": 9101, "detector": 9102, "drift": 9103, "exporter": 9104}


def serve_metrics(registry: CollectorRegistry, port: int, address: str = "127.0.0.1") -> int:
    """Serve `registry` on http://address:port/metrics in a daemon thread; returns the port bound
    (useful with port 0, which picks a free one)."""
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise WattwatchError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
    return server.server_port

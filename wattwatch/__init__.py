"""wattwatch: electricity readings in TimescaleDB, scored for anomalies and drift."""

__version__ = "0.1.0"

"""The KPI exporter and shared Prometheus metrics helpers."""

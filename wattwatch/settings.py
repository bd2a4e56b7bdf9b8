"""Configuration from WATTWATCH_* environment variables and a .env file, validated once."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wattwatch import logs
from wattwatch.errors import WattwatchError
from wattwatch.fields import FIELDS

ENV_PREFIX = "WATTWATCH_"
# Days after which a detector model is refitted: `detect run`'s default, score-csv's too.
MODEL_MAX_AGE_DAYS = 30.0
URL_EXAMPLE = "postgresql://user:password@host:5432/wattwatch"


class Settings(BaseSettings):
    """Every setting a wattwatch command reads; each field is WATTWATCH_<FIELD> in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore",
        allow_inf_nan=False,  # nan, inf and -inf are refused by every float setting
    )

    database_url: SecretStr = Field(description="PostgreSQL URL of the TimescaleDB database")
    connect_timeout_seconds: float = Field(5.0, gt=0, le=300)
    connect_attempts: int = Field(3, ge=1, le=100)
    # Login passwords for the three roles the migrations create; a role without one stays NOLOGIN.
    reader_password: SecretStr | None = None
    ingest_password: SecretStr | None = None
    jobs_password: SecretStr | None = None
    # Storage policies; 0 keeps data forever / never compresses.
    readings_retention_days: int = Field(0, ge=0)
    scores_retention_days: int = Field(0, ge=0)
    compress_after_days: int = Field(7, ge=0)
    # Chunk sizing of readings and anomaly_scores (timescale/chunks.py): rows a chunk should
    # hold, the meters to plan for (the registered ones count when there are more) and the
    # seconds between a meter's readings.
    chunk_target_rows: int = Field(5_000_000, ge=10_000, le=2_000_000_000)
    expected_meters: int = Field(0, ge=0)
    reading_interval_seconds: float = Field(60.0, gt=0, le=86_400)
    # Level of the services' log lines on stderr (DEBUG adds tracebacks of unexpected errors).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Where each service serves /metrics; compose sets 0.0.0.0 so Prometheus can reach it.
    metrics_address: str = "127.0.0.1"
    # Directory of the pg_dump and pg_restore that `db backup` / `db restore` run (their major
    # version must be the server's or newer); unset: the ones on PATH.
    pg_bin_dir: str | None = None
    # The name of this `detect run` or `drift run` worker among those sharing the meters of
    # the database; unset or empty: host name and process id (two live workers of a service
    # must not share one).
    worker_id: str | None = Field(None, max_length=200)
    # Detector: seconds between scoring cycles, days of history a model trains on, age (days)
    # after which a model is retrained (0: never), the false-alarm rate its threshold is
    # calibrated for, and readings scored per batch (bounds memory during a backfill).
    detector_interval_seconds: float = Field(0.25, gt=0, le=3600)
    detector_train_days: float = Field(28.0, gt=0, le=3660)
    detector_model_max_age_days: float = Field(MODEL_MAX_AGE_DAYS, ge=0)
    # Days of a meter's newest readings its first model leaves out (scored as new data, and
    # given to the drift service as a current window at once); 0: the first model learns all.
    detector_initial_holdout_days: float = Field(0.0, ge=0, le=3660)
    detector_alarm_rate: float = Field(1e-4, gt=0, lt=0.5)
    detector_batch_rows: int = Field(250_000, ge=1_000, le=5_000_000)
    detector_train_processes: int = Field(0, ge=0, le=256)
    detector_model_cache_meters: int = Field(0, ge=0)
    # Ingest: rows per COPY batch (one transaction each), how far ahead of now a timestamp may
    # be, and plausible ranges per field as JSON, e.g. {"voltage_v": [180, 260]} (merged with
    # the defaults in ingest/ranges.py).
    ingest_batch_rows: int = Field(50_000, ge=100, le=1_000_000)
    # Connections writing batches in parallel during a file load.
    ingest_writers: int = Field(2, ge=1, le=16)
    ingest_max_future_seconds: int = Field(300, ge=0)
    ingest_ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    # MQTT ingest: the broker (mqtt:// or mqtts://host:port, no credentials in it), its user and
    # password, the CA file of an mqtts:// broker (unset: the system's CAs), the protocol, and
    # the client id that names the persistent session (two ingests must not share one).
    mqtt_url: str | None = Field(None, pattern=r"^mqtts?://[^@/]+/?$")
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_ca_file: str | None = None
    mqtt_protocol: Literal["3.1.1", "5"] = "5"
    mqtt_client_id: str = Field("wattwatch-ingest", min_length=1, max_length=23)
    # Drift: windows (days), PSI bins and bands, calibration, minimum data, schedule (times are
    # the service's local time, HH:MM).
    drift_current_days: float = Field(7.0, gt=0, le=366)
    drift_reference_days: float = Field(28.0, gt=0, le=3660)
    drift_bins: int = Field(10, ge=2, le=100)
    drift_psi_warning: float = Field(0.1, gt=0)
    drift_psi_alert: float = Field(0.25, gt=0)
    drift_psi_critical: float = Field(0.5, gt=0)
    drift_false_alarm_rate: float = Field(0.01, gt=0, lt=0.5)
    drift_calibration_resamples: int = Field(200, ge=20, le=100_000)
    drift_min_values: int = Field(720, ge=10)
    drift_min_reference_days: int = Field(7, ge=2)
    drift_workers: int = Field(2, ge=1, le=64)  # processes judging meters in parallel
    # Readings ingested up to this long before a drift run's check can still be missed by it
    # (an ingest transaction open that long); their days' summaries are rebuilt.
    drift_ingest_margin_minutes: int = Field(60, ge=0, le=10_080)
    drift_light_at: str = Field("02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    drift_full_day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                            "sunday"] = "sunday"
    drift_full_at: str = Field("03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @field_validator("drift_psi_critical")
    @classmethod
    def _drift_bands_increase(cls, value: float, info) -> float:
        warning, alert = info.data.get("drift_psi_warning"), info.data.get("drift_psi_alert")
        if warning is not None and alert is not None and not warning < alert < value:
            raise ValueError(f"PSI bands must increase: WATTWATCH_DRIFT_PSI_WARNING ({warning}) < "
                             f"WATTWATCH_DRIFT_PSI_ALERT ({alert}) < WATTWATCH_DRIFT_PSI_CRITICAL ({value})")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        problem = url_problem(url)
        if problem:
            raise ValueError(problem)
        return SecretStr(url)

    @field_validator("ingest_ranges")
    @classmethod
    def _known_fields(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in value.items():
            if name not in FIELDS:
                raise ValueError(f"{name!r} is not a reading field; expected one of {list(FIELDS)}")
            if low > high:
                raise ValueError(f"{name}: low {low} is above high {high}")
        return value


# Said of every URL that cannot be read: what to encode so that it can.
URL_ENCODING = "percent-encode @ / ? # % [ ] and spaces in the user name and password (@ as %40)"

# libpq's URI parse errors quote the text they stumbled on, which may be the password: their
# meaning, in words that quote nothing (checked in this order).
_LIBPQ_URI_ERRORS = {
    "spaces": "it contains a space",
    "percent-encoded": "a '%' is not followed by two hexadecimal digits",
    "query parameter": "a query parameter is not a libpq connection parameter (such as "
                       "sslmode, connect_timeout or application_name)",
    "IPv6": "an IPv6 host address is not closed by ']'",
}


def url_problem(url: str) -> str | None:
    """What keeps `url` from being a PostgreSQL URL libpq reads as it looks, or None if nothing.

    The answer never quotes the URL, not even in part: a malformed URL may hold its password
    anywhere (an unencoded '@' or '/' in the password moves its end into the host, port or
    database name). Python's URL parser and libpq must agree on the user, host, port and
    database, so that what an error names later (describe_url) holds no piece of a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return f"expected a PostgreSQL URL such as {URL_EXAMPLE}"
    malformed = "malformed URL: {}; " + URL_ENCODING + f"; expected {URL_EXAMPLE}"
    try:
        parts = urlsplit(url)
    except ValueError:  # urllib's only complaint: unbalanced [ ] around an IPv6 host
        return malformed.format("a '[' or ']' is unbalanced (an IPv6 host is written [::1])")
    if parts.netloc.count("@") > 1:
        return malformed.format("it has more than one '@' before the host")
    if "@" in rest and "@" not in parts.netloc:
        return malformed.format("an '@' comes after the host part ('/', '?' or '#' in a "
                                "password end the host part early)")
    try:
        port = parts.port
    except ValueError:
        return malformed.format("the port is not a number from 0 to 65535")
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = next((meaning for key, meaning in _LIBPQ_URI_ERRORS.items() if key in str(exc)),
                      "libpq cannot read it")
        return malformed.format(reason)
    if not parts.hostname or not params.get("host"):
        return f"the URL names no host; expected {URL_EXAMPLE}"
    given = set(dict(parse_qsl(parts.query)))  # query parameters override the URL's parts
    as_url = {"user": unquote(parts.username) if parts.username else None,
              "host": unquote(parts.hostname),
              "port": str(port) if port is not None else None,
              "dbname": unquote(parts.path[1:]) or None}
    as_libpq = {key: params.get(key) for key in as_url}
    as_libpq["host"] = as_libpq["host"].lower()
    differ = [key for key in as_url if key not in given and as_url[key] != as_libpq[key]]
    if differ:
        return malformed.format(f"libpq would read another {' and '.join(differ)} than the URL "
                                "shows")
    return None


def _describe(error: dict) -> str:
    field, *inner = error["loc"]
    variable = ENV_PREFIX + str(field).upper()
    if error["type"] == "missing" and not inner:
        return f"{variable} is not set"
    if error["type"] == "finite_number":
        message = f"must be a finite number, got {error['input']}"
    elif error["type"] == "missing":
        message = "a value is missing"
    else:
        message = error["msg"].removeprefix("Value error, ")
    # A value inside a JSON setting, e.g. WATTWATCH_INGEST_RANGES's voltage_v[0].
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in inner)
    return f"{variable} is invalid: {where.removeprefix('.')}: {message}" if where \
        else f"{variable} is invalid: {message}"


def load_settings() -> Settings:
    """Read and validate the configuration, or raise one clear line naming the variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise WattwatchError(f"configuration error: {problems}") from None
    logs.configure(settings.log_level)
    return settings

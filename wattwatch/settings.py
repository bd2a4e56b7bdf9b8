"""Configuration from WATTWATCH_* environment variables and a .env file, validated once."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wattwatch.errors import WattwatchError

ENV_PREFIX = "WATTWATCH_"
URL_EXAMPLE = "postgresql://user:password@host:5432/wattwatch"


class Settings(BaseSettings):
    """Every setting a wattwatch command reads; each field is WATTWATCH_<FIELD> in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
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
    # Where each service serves /metrics; compose sets 0.0.0.0 so Prometheus can reach it.
    metrics_address: str = "127.0.0.1"

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"expected a PostgreSQL URL such as {URL_EXAMPLE}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a non-numeric port
            psycopg.conninfo.conninfo_to_dict(url)
        except (ValueError, psycopg.ProgrammingError) as exc:
            raise ValueError(f"malformed URL ({str(exc).strip()}); expected {URL_EXAMPLE}") from None
        if not parts.hostname:
            raise ValueError(f"the URL names no host; expected {URL_EXAMPLE}")
        return SecretStr(url)


def _describe(error: dict) -> str:
    field = ".".join(str(part) for part in error["loc"])
    variable = ENV_PREFIX + field.upper()
    if error["type"] == "missing":
        return f"{variable} is not set"
    message = error["msg"].removeprefix("Value error, ")
    return f"{variable} is invalid: {message}"


def load_settings() -> Settings:
    """Read and validate the configuration, or raise one clear line naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise WattwatchError(f"configuration error: {problems}") from None

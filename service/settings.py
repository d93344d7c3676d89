"""Typed settings: environment (and an optional .env), prefix TRIPS_, plus DATABASE_URL."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service can be told from outside."""

    model_config = SettingsConfigDict(env_prefix="TRIPS_", env_file=".env", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Path("data/raw")
    upload_dir: Path | None = None
    api_token: str | None = None
    max_upload_mb: int = Field(default=2048, gt=0)
    cluster_cell: float = Field(default=0.01, gt=0, le=10)
    cluster_bucket_minutes: int = Field(default=60, gt=0, le=1440)
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    worker_enabled: bool = True
    watch_inbox: bool = True
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    stale_after_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    small_job_rows: int = Field(default=50_000, ge=0)
    api_log: Path | None = Path("api.log")
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("api_log", "upload_dir", "api_token", "database_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("cluster_bucket_minutes")
    @classmethod
    def _bucket_divides_day(cls, v: int) -> int:
        if 1440 % v:
            raise ValueError("cluster_bucket_minutes must divide a day (1440 minutes)")
        return v

    @model_validator(mode="after")
    def _pool_sizes(self) -> Settings:
        if self.pool_max_size < self.pool_min_size:
            raise ValueError("pool_max_size must be >= pool_min_size")
        return self

    @property
    def uploads(self) -> Path:
        return self.upload_dir or (self.data_dir.parent / "uploads")

    def resolved_database_url(self) -> str:
        """DATABASE_URL when set, else the embedded local cluster (started on demand)."""
        if self.database_url:
            return self.database_url
        from service.db import cluster

        return cluster.up().url

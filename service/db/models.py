"""The core data model as SQLAlchemy 2 / GeoAlchemy2 tables.

The migrations in db/migrations are the source of truth; these declarations document the model
for Python readers and tools, and tests/integration/test_migrations.py checks that migrating an
empty database from zero converges to exactly these columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import ARRAY, BigInteger, Boolean, DateTime, ForeignKey, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Region(Base):
    __tablename__ = "regions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)


class Datasource(Base):
    __tablename__ = "datasources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)


class Trip(Base):
    """One trip; partitioned by `part` (0 = small jobs, else the id of a large job)."""

    __tablename__ = "trips"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    part: Mapped[int] = mapped_column(BigInteger)
    ingestion_id: Mapped[int] = mapped_column(BigInteger)
    region_id: Mapped[int] = mapped_column(Integer)
    datasource_id: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    origin = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)
    destination = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)


class IngestionJob(Base):
    __tablename__ = "ingestion_jobs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    force: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(Text)
    rows_read: Mapped[int] = mapped_column(BigInteger)
    rows_loaded: Mapped[int] = mapped_column(BigInteger)
    rows_rejected: Mapped[int] = mapped_column(BigInteger)
    bytes_read: Mapped[int] = mapped_column(BigInteger)
    ignored_columns: Mapped[list[str]] = mapped_column(ARRAY(Text))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(Text)
    backend_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IngestionRejection(Base):
    __tablename__ = "ingestion_rejections"
    job_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ingestion_jobs.id"), primary_key=True
    )
    line: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)


class IngestionEvent(Base):
    __tablename__ = "ingestion_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ingestion_jobs.id"))
    type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

"""The local cluster's server settings are this code's, also in a data directory kept from older
code: each start rewrites the section of postgresql.auto.conf that the project owns."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from service.db import cluster


def test_a_kept_data_directory_starts_with_todays_settings(private_pg: cluster.PrivateCluster):
    auto = Path(private_pg.info.datadir) / "data" / "postgresql.auto.conf"
    text = auto.read_text()
    assert text.count(cluster.CONF_MARK) == 1
    private_pg.stop()
    # what an older version of the project left: its own section, other values, one setting less
    stale = text.split(cluster.CONF_MARK)[0] + cluster.CONF_MARK + "work_mem = '1MB'\n"
    tmp = Path(private_pg.info.datadir) / "stale.conf"
    tmp.write_text(stale)
    cluster._run(["cp", str(tmp), str(auto)])
    private_pg.start()
    assert auto.read_text().count(cluster.CONF_MARK) == 1
    with psycopg.connect(private_pg.url) as conn:
        got = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("work_mem", "effective_io_concurrency", "wal_level")
        }
    assert got == {"work_mem": "64MB", "effective_io_concurrency": "64", "wal_level": "minimal"}


def test_the_buffers_are_sized_from_the_machines_memory(private_pg: cluster.PrivateCluster):
    """shared_buffers a quarter of the memory (at least 128 MB), effective_cache_size half: the
    physical memory, or a container's lower limit."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in (
        Path("/sys/fs/cgroup/memory.max"),
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    ):
        if limit.exists() and limit.read_text().strip().isdigit():
            memory = min(memory, int(limit.read_text()))
    with psycopg.connect(private_pg.url) as conn:
        got = dict(
            conn.execute(
                "SELECT name, setting::bigint * pg_size_bytes(unit) / 1048576 FROM pg_settings"
                " WHERE name IN ('shared_buffers', 'effective_cache_size')"
            ).fetchall()
        )
    assert got == {
        "shared_buffers": max(128, int(memory // 2**20 * 0.25)),
        "effective_cache_size": max(512, int(memory // 2**20 * 0.5)),
    }

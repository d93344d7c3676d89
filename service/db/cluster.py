"""The embedded local PostGIS cluster, used when DATABASE_URL is unset.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` OS user and
its data lives where that user can reach it (a clone under a private home is not such a place):
``/var/tmp/trips-pg-<hash of the project path>``. Otherwise it lives in ``.local/pg`` of the
project. Either way ``.local/cluster.json`` records where it is and on which port.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DB_NAME = "trips"
DB_USER = "postgres"


def _memory_mb(share: float, low: int) -> str:
    """`share` of this machine's memory in MB (at least `low`), as a setting's value: the
    physical memory, or the container's limit when one is set (cgroup v2, then v1)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return f"'{max(low, int(total // 2**20 * share))}MB'"


# Settings for a single-node analytics store on a small machine. wal_level=minimal lets a COPY
# into a table created in the same transaction skip WAL (the bulk-load path depends on it); a
# production server with replicas keeps wal_level=replica (see docs/scaling.md).
# shared_buffers a quarter of the memory, the cache the planner assumes half of it (6 and 12 GB
# on the 24 GB machine of docs/performance.md).
SERVER_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": _memory_mb(0.25, 128),
    "work_mem": "'64MB'",
    "maintenance_work_mem": "'1GB'",
    "effective_cache_size": _memory_mb(0.5, 512),
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'15min'",
    "synchronous_commit": "off",
    "max_locks_per_transaction": "512",
    "max_parallel_workers_per_gather": "2",
    "max_parallel_maintenance_workers": "2",
    "random_page_cost": "1.1",
    "jit": "off",
    # bitmap heap scans prefetch this many pages ahead (posix_fadvise): the raw reads of a
    # store larger than memory
    "effective_io_concurrency": "64",
    "logging_collector": "off",
    "unix_socket_directories": "''",
    "timezone": "'UTC'",
}


class ClusterError(RuntimeError):
    """The local cluster cannot be set up or started."""


@dataclass
class ClusterInfo:
    datadir: str
    port: int
    logfile: str

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"


def project_root() -> Path:
    env = os.environ.get("TRIPS_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in [here, *here.parents]:
        if (p / "pyproject.toml").exists() and (p / "service").is_dir():
            return p
    return here


def _is_root() -> bool:
    return os.geteuid() == 0


def _state_file() -> Path:
    return project_root() / ".local" / "cluster.json"


def _default_datadir() -> Path:
    root = project_root()
    if _is_root():
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
        return Path(f"/var/tmp/trips-pg-{digest}")
    return root / ".local" / "pg"


def pg_bindir() -> Path:
    """The newest PostgreSQL server install that has PostGIS available."""
    candidates = []
    for ctl in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        version = ctl.split("/")[4]
        if glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control"):
            candidates.append((int(re.sub(r"\D", "", version) or 0), Path(ctl).parent))
    if candidates:
        return max(candidates)[1]
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).resolve().parent
    raise ClusterError(
        "PostgreSQL server with PostGIS not found. Install it with:\n"
        "  sudo apt-get update && sudo apt-get install -y postgresql postgresql-postgis\n"
        "(or run `make install` as root), or set DATABASE_URL to an existing PostGIS."
    )


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if _is_root():
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _free_port(preferred: int = 55432) -> int:
    for port in [preferred, 0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise ClusterError("no free TCP port")


def load_info() -> ClusterInfo | None:
    f = _state_file()
    if not f.exists():
        return None
    return ClusterInfo(**json.loads(f.read_text()))


def _save_info(info: ClusterInfo) -> None:
    f = _state_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(asdict(info), indent=2))


def _init(datadir: Path) -> None:
    datadir.parent.mkdir(parents=True, exist_ok=True)
    if _is_root():
        pw = pwd.getpwnam("postgres")
        datadir.mkdir(parents=True, exist_ok=True)
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
    datadir.mkdir(parents=True, exist_ok=True)
    os.chmod(datadir, 0o700)
    pgdata = datadir / "data"
    bindir = pg_bindir()
    res = _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            DB_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=False,
    )
    if res.returncode != 0:
        raise ClusterError(f"initdb failed: {res.stderr.strip()}")


CONF_MARK = "\n# trips service\n"


def _write_conf(datadir: Path, conf: dict[str, str] | None = None) -> None:
    """This code's server settings, as the section after CONF_MARK of postgresql.auto.conf
    (replaced, not appended to): before each start of a local or private cluster, the first too
    (the Citus nodes are private clusters), so a data directory kept from older code (a CI
    machine's /var/tmp) runs with today's settings."""
    settings = "\n".join(f"{k} = {v}" for k, v in {**SERVER_CONF, **(conf or {})}.items())
    auto = datadir / "data" / "postgresql.auto.conf"
    content = auto.read_text() if auto.exists() else ""
    auto_tmp = datadir / "auto.conf.tmp"
    auto_tmp.write_text(content.split(CONF_MARK)[0] + CONF_MARK + settings + "\n")
    _run(["cp", str(auto_tmp), str(auto)])
    auto_tmp.unlink()


def is_running(info: ClusterInfo) -> bool:
    res = _run(
        [str(pg_bindir() / "pg_ctl"), "-D", str(Path(info.datadir) / "data"), "status"], check=False
    )
    return res.returncode == 0


def _running_port(info: ClusterInfo) -> int | None:
    """The port the running server of the data directory listens on (line 4 of its
    postmaster.pid), or None."""
    try:
        return int((Path(info.datadir) / "data" / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, IndexError, ValueError):
        return None


def _wait_ready(info: ClusterInfo, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", info.port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise ClusterError(f"local cluster did not accept connections; see {info.logfile}")


def up(workers: int | None = None) -> ClusterInfo:
    """Initialise (once) and start the local cluster; create the database. Idempotent.

    With `workers` (N > 0) the project's local cluster becomes a Citus cluster of a coordinator
    and N workers (service/db/citus.py), and stays one until `workers=0` switches back; the
    answer is then the coordinator's."""
    from service.db import citus

    if workers or (workers is None and citus.load_state() is not None):
        return citus.up(workers).coordinator
    if workers == 0:
        citus.forget()
    info = load_info()
    if info is None or not (Path(info.datadir) / "data" / "PG_VERSION").exists():
        datadir = _default_datadir()
        if not (datadir / "data" / "PG_VERSION").exists():
            if datadir.exists():
                shutil.rmtree(datadir)
            _init(datadir)
        info = ClusterInfo(str(datadir), _free_port(), str(datadir / "server.log"))
        _save_info(info)
    if is_running(info):
        # Already running: a fresh clone at a path whose cluster still runs has no state file,
        # and a stale one may name another port. The server's own pid file says which.
        port = _running_port(info)
        if port is not None and port != info.port:
            info.port = port
            _save_info(info)
    else:
        port_in_use = False
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", info.port))
            except OSError:
                port_in_use = True
        if port_in_use:
            info.port = _free_port(0)
            _save_info(info)
        return PrivateCluster(Path(info.datadir), info.port).start().info
    _wait_ready(info)
    _ensure_database(info)
    return info


def _ensure_database(info: ClusterInfo) -> None:
    import psycopg

    admin = f"postgresql://{DB_USER}@127.0.0.1:{info.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def down() -> bool:
    from service.db import citus

    stopped = citus.down() if citus.load_state() is not None else False
    info = load_info()
    if info is None or not is_running(info):
        return stopped
    PrivateCluster(Path(info.datadir), info.port).stop()
    return True


class PrivateCluster:
    """A cluster in a data directory of its own, started and stopped by pg_ctl: the project's
    local cluster (`up`, `down`), each Citus node, and throwaway ones for fault tests that stop or
    restart the server.

    `datadir` must be reachable by the postgres OS user when running as root: pass a folder
    under /var/tmp or /tmp, not under a private home directory.
    """

    def __init__(self, datadir: Path, port: int | None = None, conf: dict[str, str] | None = None):
        self.info = ClusterInfo(str(datadir), port or _free_port(0), str(datadir / "server.log"))
        self.conf = conf

    @property
    def url(self) -> str:
        return self.info.url

    def start(self) -> PrivateCluster:
        if not (Path(self.info.datadir) / "data" / "PG_VERSION").exists():
            _init(Path(self.info.datadir))
        _write_conf(Path(self.info.datadir), self.conf)
        res = _run(
            [
                str(pg_bindir() / "pg_ctl"),
                "-D",
                str(Path(self.info.datadir) / "data"),
                "-l",
                self.info.logfile,
                "-o",
                f"-p {self.info.port}",
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=False,
        )
        if res.returncode != 0:
            log = Path(self.info.logfile)
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise ClusterError(f"pg_ctl start failed: {res.stderr.strip()}\n{tail}")
        _wait_ready(self.info)
        _ensure_database(self.info)
        return self

    def stop(self, mode: str = "fast") -> None:
        _run(
            [
                str(pg_bindir() / "pg_ctl"),
                "-D",
                str(Path(self.info.datadir) / "data"),
                "-m",
                mode,
                "-w",
                "stop",
            ],
            check=False,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.info.datadir, ignore_errors=True)


def status() -> str:
    from service.db import citus

    if citus.load_state() is not None:
        return citus.status()
    info = load_info()
    if info is None:
        return "not initialised"
    state = "running" if is_running(info) else "stopped"
    return f"{state}: {info.url} (data {info.datadir})"

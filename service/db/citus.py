"""A local Citus cluster: a coordinator and N workers on this machine (`trips db up --workers N`),
and a throwaway one for tests (`CitusCluster`).

Each node is a PostgreSQL data directory and port of its own, initialised like the single local
cluster (cluster._init: trust auth, TCP on 127.0.0.1 only) plus CITUS_CONF. The coordinator
reaches the workers by TCP on 127.0.0.1 as `postgres`. `.local/citus.json` records the nodes;
while it exists the project's local cluster is this one: `cluster.up()` (and so `trips db url`)
answers with the coordinator. Node data lives in `<single cluster's data dir>-citus/<node>`
(/var/tmp/trips-pg-<hash>-citus/ as root). Citus itself comes from db/install-citus.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

import psycopg

from service.db import cluster
from service.db.cluster import ClusterError, ClusterInfo

HOST = "127.0.0.1"
# The coordinator's preferred port; worker i prefers PORT_BASE + i. Taken ones fall back to any.
PORT_BASE = 55440

CITUS_CONF = {
    "shared_preload_libraries": "'citus'",
    # A write that touches shards on several workers commits with two-phase commit.
    "max_prepared_transactions": "200",
    # Loopback only, so no TLS between nodes (with Citus' default sslmode=require, CREATE
    # EXTENSION citus turns ssl on with a self-signed certificate).
    "citus.node_conninfo": "'sslmode=disable'",
    # Online shard moves and the rebalancer (after adding a worker) stream shards by logical
    # replication: with the single cluster's wal_level=minimal and max_wal_senders=0 they fail
    # ("number of requested standby connections exceeds max_wal_senders"); only
    # shard_transfer_mode => 'block_writes' works then. docs/scaling.md has the measurements.
    "wal_level": "logical",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    # Three or more servers share one machine.
    "shared_buffers": "'512MB'",
    "effective_cache_size": "'4GB'",
}
# Throwaway test clusters: smaller still.
TEST_CONF = {**CITUS_CONF, "shared_buffers": "'128MB'", "max_connections": "100"}


@dataclass
class CitusInfo:
    coordinator: ClusterInfo
    workers: list[ClusterInfo] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.coordinator.url

    def nodes(self) -> list[tuple[str, ClusterInfo]]:
        return [("coordinator", self.coordinator)] + [
            (f"worker{i}", w) for i, w in enumerate(self.workers, 1)
        ]


def _state_file() -> Path:
    return cluster.project_root() / ".local" / "citus.json"


def load_state() -> CitusInfo | None:
    f = _state_file()
    if not f.exists():
        return None
    raw = json.loads(f.read_text())
    return CitusInfo(ClusterInfo(**raw["coordinator"]), [ClusterInfo(**w) for w in raw["workers"]])


def _save_state(info: CitusInfo) -> None:
    f = _state_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(asdict(info), indent=2))


def _base_dir() -> Path:
    return Path(f"{cluster._default_datadir()}-citus")


def _install_script() -> Path:
    here = Path(__file__).resolve().parents[2] / "db" / "install-citus.sh"
    return here if here.exists() else cluster.project_root() / "db" / "install-citus.sh"


def is_installed() -> bool:
    """citus.so and citus.control are there for the server the local cluster runs."""
    res = subprocess.run(
        [str(cluster.pg_bindir() / "pg_config"), "--pkglibdir", "--sharedir"],
        capture_output=True,
        text=True,
        check=True,
    )
    libdir, sharedir = res.stdout.split()
    return (Path(libdir) / "citus.so").exists() and (
        Path(sharedir) / "extension" / "citus.control"
    ).exists()


def ensure_installed() -> None:
    """Runs db/install-citus.sh when Citus is missing (its messages go to stderr)."""
    if is_installed():
        return
    res = subprocess.run(["bash", str(_install_script())], stdout=sys.stderr, check=False)
    if res.returncode != 0 or not is_installed():
        raise ClusterError(f"Citus is not installed; see the messages of {_install_script()}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As PostgreSQL binds: a port whose last connections linger in TIME_WAIT (a node just
        # stopped) is free for it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _pick_port(preferred: int, taken: set[int]) -> int:
    if preferred and preferred not in taken and _port_free(preferred):
        return preferred
    while (port := cluster._free_port(0)) in taken:
        pass
    return port


def _start_node(info: ClusterInfo, conf: dict[str, str], taken: set[int]) -> None:
    """Starts one node (initialising it once); a running one keeps its port, a stopped one whose
    port was taken meanwhile gets another."""
    if cluster.is_running(info):
        info.port = cluster._running_port(info) or info.port
        return
    if not _port_free(info.port):
        info.port = _pick_port(0, taken)
    cluster.PrivateCluster(Path(info.datadir), info.port, conf).start()


def _start_all(info: CitusInfo, conf: dict[str, str]) -> None:
    taken: set[int] = set()
    for _, node in info.nodes():
        _start_node(node, conf, taken)
        taken.add(node.port)


def _setup(info: CitusInfo) -> None:
    """Extensions on every node, then the coordinator's node list: itself and each worker. A
    worker knows its group (pg_dist_local_group, 0 until registered), so one that came back on
    another port is updated in place, keeping its shards."""
    groups = {}
    for _, node in info.nodes():
        with psycopg.connect(node.url, autocommit=True, connect_timeout=10) as conn:
            have = {name for (name,) in conn.execute("SELECT extname FROM pg_extension")}
            # Only when missing: a registered worker refuses even CREATE EXTENSION IF NOT EXISTS
            # ("operation is not allowed on this node").
            for ext in ("citus", "postgis"):
                if ext not in have:
                    conn.execute(f"CREATE EXTENSION {ext}")
            row = conn.execute("SELECT groupid FROM pg_dist_local_group").fetchone()
            groups[node.datadir] = row[0] if row else 0
    with psycopg.connect(info.url, autocommit=True, connect_timeout=10) as conn:
        registered = {
            group: (nodeid, port)
            for nodeid, group, port in conn.execute(
                "SELECT nodeid, groupid, nodeport FROM pg_dist_node WHERE nodename = %s", [HOST]
            )
        }
        # Moved workers first: the calls below sync metadata to every worker registered, and
        # refuse while one is out of sync (the maintenance daemon resyncs after an update).
        moved = False
        for worker in info.workers:
            known = registered.get(groups[worker.datadir])
            if groups[worker.datadir] and known and known[1] != worker.port:
                conn.execute("SELECT citus_update_node(%s, %s, %s)", [known[0], HOST, worker.port])
                moved = True
        if moved:
            # Now rather than at the maintenance daemon's next retry (about 30 s measured).
            conn.execute("SELECT start_metadata_sync_to_all_nodes()")
            _wait_synced(conn)
        if registered.get(0, (0, 0))[1] != info.coordinator.port:
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)", [HOST, info.coordinator.port])
        for worker in info.workers:
            if not groups[worker.datadir] or groups[worker.datadir] not in registered:
                conn.execute("SELECT citus_add_node(%s, %s)", [HOST, worker.port])


def _wait_synced(conn: psycopg.Connection, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_dist_node WHERE hasmetadata AND NOT metadatasynced"
    while (row := conn.execute(query).fetchone()) and row[0] and time.monotonic() < deadline:
        time.sleep(0.5)


def up(workers: int | None = None) -> CitusInfo:
    """Starts the project's Citus cluster with `workers` workers (None: as recorded), creating
    and registering nodes that do not exist yet. Idempotent."""
    state = load_state()
    if workers is None:
        if state is None:
            raise ClusterError("no local Citus cluster recorded: trips db up --workers N")
        workers = len(state.workers)
    if workers < 1:
        raise ClusterError("a Citus cluster needs at least one worker")
    ensure_installed()
    base = _base_dir()
    if state is None:
        node = base / "coordinator"
        state = CitusInfo(ClusterInfo(str(node), PORT_BASE, str(node / "server.log")))
    if workers < len(state.workers):
        raise ClusterError(
            f"the local Citus cluster has {len(state.workers)} workers; removing workers means "
            "draining their shards first (citus_drain_node), which `trips db up` does not do"
        )
    taken = {n.port for _, n in state.nodes()}
    while len(state.workers) < workers:
        i = len(state.workers) + 1
        node = base / f"worker{i}"
        port = _pick_port(PORT_BASE + i, taken)
        taken.add(port)
        state.workers.append(ClusterInfo(str(node), port, str(node / "server.log")))
    base.mkdir(parents=True, exist_ok=True)
    _start_all(state, CITUS_CONF)
    _save_state(state)
    _setup(state)
    return state


def _stop(info: CitusInfo) -> bool:
    stopped = False
    for _, node in info.nodes():
        if cluster.is_running(node):
            cluster.PrivateCluster(Path(node.datadir), node.port).stop()
            stopped = True
    return stopped


def down() -> bool:
    """Stops every node of the project's Citus cluster; True when one was running."""
    state = load_state()
    return _stop(state) if state is not None else False


def forget() -> None:
    """Stops the Citus cluster and makes the single PostGIS cluster the project's again (the
    nodes' data stays, and `trips db up --workers N` takes it back)."""
    down()
    _state_file().unlink(missing_ok=True)


def status() -> str:
    state = load_state()
    if state is None:
        return "no local Citus cluster"
    lines = [f"citus: a coordinator and {len(state.workers)} workers"]
    for name, node in state.nodes():
        running = cluster.is_running(node)
        lines.append(
            f"{name}: {'running' if running else 'stopped'}: {node.url} (data {node.datadir})"
        )
    if cluster.is_running(state.coordinator):
        try:
            with psycopg.connect(state.url, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM citus_get_active_worker_nodes()"
                ).fetchone()
            lines.append(f"active workers (seen by the coordinator): {row[0] if row else 0}")
        except psycopg.Error as exc:
            lines.append(f"coordinator does not answer: {exc}")
    return "\n".join(lines)


class CitusCluster:
    """A throwaway Citus cluster for tests: a coordinator and `workers` workers in a private
    directory (default: a new one under /var/tmp, reachable by the postgres OS user) on free
    ports. Installs Citus first if it is missing.

        with CitusCluster(workers=2) as url:
            psycopg.connect(url)  # the coordinator's `trips` database
    """

    def __init__(
        self, workers: int = 2, base_dir: Path | None = None, conf: dict[str, str] | None = None
    ):
        self.conf = {**TEST_CONF, **(conf or {})}
        self.own_dir = base_dir is None
        self.base = base_dir or Path(tempfile.mkdtemp(prefix="trips-citus-", dir="/var/tmp"))
        os.chmod(self.base, 0o755)
        ports: set[int] = set()
        for _ in range(workers + 1):
            ports.add(_pick_port(0, ports))
        port_list = sorted(ports)
        nodes = [self.base / "coordinator"] + [
            self.base / f"worker{i}" for i in range(1, workers + 1)
        ]
        infos = [
            ClusterInfo(str(n), p, str(n / "server.log"))
            for n, p in zip(nodes, port_list, strict=True)
        ]
        self.info = CitusInfo(infos[0], infos[1:])

    @property
    def url(self) -> str:
        return self.info.url

    def start(self) -> str:
        ensure_installed()
        _start_all(self.info, self.conf)
        _setup(self.info)
        return self.url

    def stop(self) -> None:
        _stop(self.info)

    def destroy(self) -> None:
        """Stops the nodes and removes their data (and the directory, when it made it)."""
        self.stop()
        for _, node in self.info.nodes():
            shutil.rmtree(node.datadir, ignore_errors=True)
        if self.own_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

"""The `trips` command."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console

from service.settings import Settings

app = typer.Typer(
    help="PostGIS trip analytics service.", no_args_is_help=True, pretty_exceptions_enable=False
)
db_app = typer.Typer(
    help="The database: embedded local cluster and migrations.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


def migrated_url(settings: Settings) -> str:
    from service.db.migrate import migrate

    url = settings.resolved_database_url()
    migrate(url)
    from service.analytics.cli import sync_cluster_params

    sync_cluster_params(url, settings)
    return url


@db_app.command("up")
def db_up(
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="A local Citus cluster: a coordinator and N workers (installs Citus if missing); "
        "0 switches back to the single PostGIS cluster. Default: the cluster recorded.",
    ),
) -> None:
    """Start the embedded local PostGIS cluster (initialising it once); prints its URL."""
    from service.db import cluster

    try:
        info = cluster.up(workers)
    except cluster.ClusterError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    typer.echo(info.url)


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded local cluster (every node of a Citus one)."""
    from service.db import cluster

    typer.echo("stopped" if cluster.down() else "not running")


@db_app.command("status")
def db_status() -> None:
    """Report the embedded local cluster's state (every node of a Citus one)."""
    from service.db import cluster

    typer.echo(cluster.status())


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use."""
    typer.echo(_settings().resolved_database_url())


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the SQL migrations in db/migrations (idempotent)."""
    from service.db.migrate import CannotMigrate, migrate

    try:
        applied = migrate(_settings().resolved_database_url())
    except CannotMigrate as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo("applied: " + ", ".join(applied) if applied else "up to date")


def _is_loopback(host: str) -> bool:
    """Only this machine can reach the address (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default TRIPS_HOST)"),
    port: int = typer.Option(None, help="port (default TRIPS_PORT)"),
) -> None:
    """Serve the HTTP API with an in-process worker and the inbox watcher."""
    import uvicorn

    from service.api.app import create_app

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    if not _is_loopback(host) and not settings.api_token:
        console.print(
            f"[bold red]WARNING: serving on {host} without TRIPS_API_TOKEN: anyone who "
            "can reach this address can ingest data.[/]"
        )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def worker() -> None:
    """Run a standalone ingestion worker against the database."""
    from service.ingest.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = _settings()
    url = migrated_url(settings)
    w = Worker(url, settings)
    try:
        w.run()
    except KeyboardInterrupt:
        w.stop()


@app.command()
def ingest(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    server: str = typer.Option(None, help="upload to a running API instead of loading here"),
    force: bool = typer.Option(False, help="ingest even if the same bytes were ingested before"),
) -> None:
    """Ingest trip files with a progress bar and a summary; non-zero exit when a file fails."""
    if server:
        from service.ingest.remote import ingest_remote

        ok = ingest_remote(server, files, force, console)
    else:
        from service.ingest.local import ingest_local

        settings = _settings()
        ok = ingest_local(migrated_url(settings), settings, files, force, console)
    raise typer.Exit(0 if ok else 1)


@app.command()
def generate(
    rows: int = typer.Option(..., help="number of trips"),
    out: Path = typer.Option(..., help="output file (.csv or .csv.gz)"),
    seed: int = typer.Option(42, help="random seed"),
) -> None:
    """Write a realistic synthetic trip file."""
    from service.generate import generate_file

    generate_file(out, rows, seed, console=console)


from service.analytics.cli import register as _register_analytics  # noqa: E402

_register_analytics(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

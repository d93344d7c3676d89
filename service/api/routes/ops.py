"""Operations: liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database is reachable and every migration is applied."""
    from service.db.migrate import available

    try:
        async with request.app.state.pool.connection(timeout=5) as conn:
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {r[0] for r in await cur.fetchall()}
    except Exception as e:  # not ready, whatever the reason
        return JSONResponse({"status": "unavailable", "detail": str(e)}, status_code=503)
    missing = [name for v, name, _ in available() if v not in done]
    if missing:
        return JSONResponse({"status": "migrations pending", "pending": missing}, status_code=503)
    return JSONResponse({"status": "ready"})

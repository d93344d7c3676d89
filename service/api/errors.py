"""Domain errors and the one table that maps them to HTTP status codes."""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger("trips.api")


class DomainError(Exception):
    """Base of errors a client can cause; `detail` is what it is told."""

    def __init__(self, detail: object):
        super().__init__(str(detail))
        self.detail = detail


class NotFound(DomainError):
    pass


class BadRequest(DomainError):
    pass


class Invalid(DomainError):
    """Well-formed but unacceptable input (422)."""


class Unauthorized(DomainError):
    pass


class Forbidden(DomainError):
    pass


class TooLarge(DomainError):
    pass


class Unavailable(DomainError):
    pass


STATUS = {
    NotFound: 404,
    BadRequest: 400,
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    TooLarge: 413,
    Unavailable: 503,
}


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(
            {"detail": exc.detail}, status_code=STATUS.get(type(exc), 400), headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def _timeout(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "query took too long; narrow the request"}, status_code=503)

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse({"detail": "database unavailable, try again"}, status_code=503)

    @app.exception_handler(psycopg.errors.DataException)
    async def _data(request: Request, exc: Exception) -> JSONResponse:
        # Values that pass validation but the database still refuses (out of range, etc.).
        return JSONResponse(
            {"detail": f"invalid value: {str(exc).splitlines()[0]}"}, status_code=422
        )

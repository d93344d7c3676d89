"""Request dependencies: settings, the pool, the write-access check."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from service.api.errors import Forbidden, Unauthorized
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


def require_writer(request: Request) -> None:
    """With TRIPS_API_TOKEN set, writes need `Authorization: Bearer <token>` (constant-time)."""
    token = request.app.state.settings.api_token
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    # Digests of equal length: the comparison leaks neither the token's bytes nor its length.
    given_digest = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    if not hmac.compare_digest(given_digest, hashlib.sha256(token.encode()).digest()):
        raise Forbidden("invalid token")

"""Uploads streamed to disk: a multipart body is parsed as it arrives, hashed, size-capped.

Nothing is held whole in memory, and an upload over TRIPS_MAX_UPLOAD_MB is refused (413) as soon
as it crosses the limit, its partial file removed.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from service.api.errors import BadRequest, NotFound, TooLarge
from service.ingest.jobs import sha256_of

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Upload:
    path: Path
    filename: str
    sha256: str
    bytes: int


def safe_name(filename: str) -> str:
    name = Path(filename.replace("\\", "/")).name
    return _SAFE.sub("_", name)[:120] or "upload.csv"


async def receive_multipart(
    content_type: str, body: AsyncIterator[bytes], target_dir: Path, max_bytes: int
) -> Upload:
    """Write the multipart field `file` of a request body to `target_dir`."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("expected multipart/form-data with a boundary")
    target_dir.mkdir(parents=True, exist_ok=True)
    state: dict = {
        "headers": {},
        "field": b"",
        "value": b"",
        "name": None,
        "filename": None,
        "out": None,
        "path": None,
        "size": 0,
        "sha": hashlib.sha256(),
        "done": None,
        "too_large": False,
    }

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        disp = state["headers"].get(b"content-disposition", b"")
        _, p = parse_options_header(disp)
        name = p.get(b"name", b"").decode("utf-8", "replace")
        if name == "file" and state["out"] is None and state["done"] is None:
            filename = p.get(b"filename", b"upload.csv").decode("utf-8", "replace")
            state["filename"] = filename
            state["path"] = target_dir / f"{uuid.uuid4().hex}-{safe_name(filename)}"
            state["out"] = open(state["path"], "wb")  # noqa: SIM115
        state["headers"] = {}

    def on_part_data(data: bytes, start: int, end: int) -> None:
        out = state["out"]
        if out is None or state["too_large"]:
            return
        chunk = data[start:end]
        state["size"] += len(chunk)
        if state["size"] > max_bytes:
            state["too_large"] = True
            return
        state["sha"].update(chunk)
        out.write(chunk)

    def on_part_end() -> None:
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
            state["done"] = state["path"]

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
            if state["too_large"]:
                raise TooLarge(
                    f"upload larger than {max_bytes // (1 << 20)} MB (TRIPS_MAX_UPLOAD_MB)"
                )
        parser.finalize()
    except TooLarge:
        _discard(state)
        raise
    except Exception as e:
        _discard(state)
        raise BadRequest(f"malformed multipart body: {e}") from e
    if state["done"] is None:
        _discard(state)
        raise BadRequest("multipart body has no complete field named 'file'")
    return Upload(state["done"], state["filename"], state["sha"].hexdigest(), state["size"])


def _discard(state: dict) -> None:
    if state["out"] is not None:
        state["out"].close()
    for p in (state["path"], state["done"]):
        if p is not None:
            Path(p).unlink(missing_ok=True)


def resolve_inside(data_dir: Path, relative: str) -> Path:
    """A path named by a client, resolved (symlinks too) and required to stay in the data dir."""
    if not relative or "\x00" in relative:
        raise BadRequest("path must be a non-empty file name inside the data dir")
    base = data_dir.resolve()
    candidate = Path(relative)
    if candidate.is_absolute():
        raise BadRequest("path must be relative to the data dir")
    try:
        resolved = (base / candidate).resolve()
        if resolved != base and base not in resolved.parents:
            raise BadRequest("path resolves outside the data dir")
        is_file = resolved.is_file()
    except (OSError, RuntimeError) as e:  # a name too long, a symlink loop: not a file of ours
        raise BadRequest(
            f"path cannot be resolved: {e.strerror or e}"
            if isinstance(e, OSError)
            else "path cannot be resolved"
        ) from e
    if not is_file:
        raise NotFound(f"no such file in the data dir: {relative}")
    return resolved


def digest_inside(path: Path, relative: str) -> tuple[str, int]:
    """sha256 and size of a file `resolve_inside` found; it may vanish or turn unreadable in
    between, which is the client's 404 or 400, not a 500. Server paths stay out of the detail."""
    try:
        return sha256_of(path)
    except FileNotFoundError:
        raise NotFound(
            f"no such file in the data dir: {relative} (it went away before it could be read)"
        ) from None
    except OSError as e:
        raise BadRequest(
            f"cannot read {relative} in the data dir: {e.strerror or type(e).__name__}"
        ) from None

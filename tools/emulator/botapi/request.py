"""Reading Bot API parameters from a query string, a urlencoded or JSON body, or a streamed multipart body.

Uploaded files are streamed to disk (never held in memory) with the upload size limit enforced as they
arrive, so a 50 MB sendDocument costs 64 KiB of RAM.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from ..world import UploadWriter, World
from .errors import ENTITY_TOO_LARGE, bad_request

CHUNK = 64 * 1024


class UploadDropped(Exception):
    """The `drop_upload` fault fired: the caller must drop the connection."""


@dataclass
class UploadedFile:
    writer: UploadWriter
    filename: str
    content_type: str | None

    @property
    def mime_type(self) -> str:
        guessed = mimetypes.guess_type(self.filename)[0]
        if guessed:
            return guessed
        if self.content_type and self.content_type != "application/octet-stream":
            return self.content_type
        return "application/octet-stream"


class Params:
    """Typed access to request parameters; each getter raises Telegram's 400 when a value is bad."""

    def __init__(self, values: dict[str, Any], files: dict[str, UploadedFile]) -> None:
        self.values = values
        self.files = files
        self.used_files: set[str] = set()

    def has(self, name: str) -> bool:
        return self.values.get(name) not in (None, "")

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None:
            if required:
                raise bad_request(f"parameter \"{name}\" is required")
            return default
        return value if isinstance(value, str) else json.dumps(value)

    def int(self, name: str, default: int | None = None, *, required: bool = False) -> int | None:
        value = self.values.get(name)
        if value in (None, ""):
            if required:
                raise bad_request(f"parameter \"{name}\" is required")
            return default
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def float(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value in (None, ""):
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value in (None, ""):
            return default
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("true", "1", "yes")

    def json(self, name: str) -> Any:
        value = self.values.get(name)
        if value in (None, ""):
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {name} JSON object") from None
        return value

    def file(self, ref: Any) -> UploadedFile | None:
        """The upload a parameter points at: the part itself, or `attach://<name>`."""
        if isinstance(ref, UploadedFile):
            self.used_files.update(name for name, up in self.files.items() if up is ref)
            return ref
        if isinstance(ref, str) and ref.startswith("attach://"):
            name = ref[len("attach://"):]
            upload = self.files.get(name)
            if upload is None:
                raise bad_request(f"file attach://{name} not found in the request")
            self.used_files.add(name)
            return upload
        return None

    def discard_unused(self) -> None:
        for name, upload in self.files.items():
            if name not in self.used_files:
                upload.writer.abort()


async def read_params(
    request: web.Request,
    world: World,
    *,
    drop_after: int | None = None,
    throttle: Callable[[int], Awaitable[None]] | None = None,
) -> Params:
    """Parse every parameter source. `drop_after` (bytes) raises UploadDropped part-way through a body."""
    values: dict[str, Any] = dict(request.query)
    files: dict[str, UploadedFile] = {}
    ctype = request.content_type
    if request.method != "POST" or not request.can_read_body:
        if drop_after is not None:
            raise UploadDropped
        return Params(values, files)
    if ctype.startswith("multipart/"):
        try:
            await _read_multipart(request, world, values, files, drop_after, throttle)
        except BaseException:
            for upload in files.values():
                upload.writer.abort()
            raise
        return Params(values, files)
    body = await request.read()
    if drop_after is not None:
        raise UploadDropped
    if throttle is not None:
        await throttle(len(body))
    if ctype == "application/json":
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise bad_request("can't parse JSON request body") from None
        if not isinstance(data, dict):
            raise bad_request("JSON request body must be an object")
        values.update(data)
    else:
        form = await request.post()
        values.update({k: v for k, v in form.items() if isinstance(v, str)})
    return Params(values, files)


async def _read_multipart(
    request: web.Request,
    world: World,
    values: dict[str, Any],
    files: dict[str, UploadedFile],
    drop_after: int | None,
    throttle: Callable[[int], Awaitable[None]] | None,
) -> None:
    # a --local server takes uploads up to MTProto's 2000 MB (telegram-bot-api's local mode)
    limit = world.knobs.mtproto_file_limit if world.knobs.botapi_local_mode else world.knobs.botapi_upload_limit
    received = 0
    too_large = False
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise bad_request("nested multipart bodies are not supported")
        name = part.name or ""
        if part.filename is None:
            data = await part.read()
            received += len(data)
            values[name] = data.decode(part.get_charset("utf-8"))
            continue
        writer = world.open_upload()
        upload = UploadedFile(writer, part.filename or name, part.headers.get("Content-Type"))
        files[name] = upload
        while chunk := await part.read_chunk(CHUNK):
            received += len(chunk)
            if drop_after is not None and received >= drop_after:
                raise UploadDropped
            if throttle is not None:
                await throttle(len(chunk))
            if too_large or writer.size + len(chunk) > limit:
                too_large = True  # keep draining so the client reads our 413 rather than a reset
                continue
            writer.append(chunk)
    if drop_after is not None:
        raise UploadDropped
    if too_large:
        raise ENTITY_TOO_LARGE

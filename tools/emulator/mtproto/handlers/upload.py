"""upload.saveFilePart, upload.saveBigFilePart, upload.getFile."""

from __future__ import annotations

from telethon.tl import functions, types

from ..config import DC_ID
from ..context import RpcContext
from ..rpc import RpcError, flood_wait, rpc

ONE_MIB = 1024 * 1024


def _read_budget(ctx: RpcContext, kind: str) -> None:
    wait = ctx.world.limiter.check_read(ctx.require_user(), kind)
    if wait is not None:
        raise flood_wait(wait)


@rpc(functions.upload.SaveFilePartRequest)
async def save_file_part(ctx: RpcContext, req: functions.upload.SaveFilePartRequest) -> bool:
    _read_budget(ctx, "part")
    ctx.front.uploads.save_part(ctx.require_user(), req.file_id, req.file_part, req.bytes, total_parts=None)
    return True


@rpc(functions.upload.SaveBigFilePartRequest)
async def save_big_file_part(ctx: RpcContext, req: functions.upload.SaveBigFilePartRequest) -> bool:
    _read_budget(ctx, "part")
    ctx.front.uploads.save_part(
        ctx.require_user(), req.file_id, req.file_part, req.bytes, total_parts=req.file_total_parts
    )
    return True


def check_range(offset: int, limit: int, *, precise: bool) -> None:
    """Telegram's upload.getFile rules (core.telegram.org/api/files#downloading-files)."""
    if precise:
        if limit <= 0 or limit % 1024 or limit > ONE_MIB:
            raise RpcError(400, "LIMIT_INVALID")
        if offset < 0 or offset % 1024:
            raise RpcError(400, "OFFSET_INVALID")
        return
    if limit <= 0 or limit % 4096 or ONE_MIB % limit:
        raise RpcError(400, "LIMIT_INVALID")
    if offset < 0 or offset % 4096:
        raise RpcError(400, "OFFSET_INVALID")
    if offset // ONE_MIB != (offset + limit - 1) // ONE_MIB:
        raise RpcError(400, "LIMIT_INVALID")


@rpc(functions.upload.GetFileRequest)
async def get_file(ctx: RpcContext, req: functions.upload.GetFileRequest) -> types.upload.File:
    _read_budget(ctx, "part")
    loc = req.location
    if not isinstance(loc, types.InputDocumentFileLocation):
        raise RpcError(400, "LOCATION_INVALID")
    if loc.thumb_size:
        raise RpcError(400, "LOCATION_INVALID")  # documents stored here have no thumbnails
    check_range(req.offset, req.limit, precise=bool(req.precise))
    rec = ctx.world.file(loc.id)
    if rec is None or rec.access_hash != loc.access_hash:
        raise RpcError(400, "FILE_ID_INVALID")
    ctx.front.file_refs.check(rec, loc.file_reference)
    file_dc = ctx.world.knobs.file_dc
    if file_dc and (ctx.front.keys.dc_of(ctx.session.key) or DC_ID) != file_dc:
        # two-DC mode: files live on `file_dc`; asked anywhere else Telegram answers 303 FILE_MIGRATE_X
        # (core.telegram.org/api/datacenter: "repeat the query on the specified DC")
        raise RpcError(303, f"FILE_MIGRATE_{file_dc}")
    data = ctx.world.read_file_range(rec.id, req.offset, req.limit) if req.offset < rec.size else b""
    return types.upload.File(type=types.storage.FilePartial(), mtime=0, bytes=data)

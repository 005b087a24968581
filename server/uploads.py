"""Read an uploaded image: a multipart ``file`` field (plus optional extra file fields) or a raw ``image/*`` body.

Bodies are streamed, not read with ``Request.body()``, which would keep a copy on the request object until the
response is sent: here the caller holds the only reference and can drop it once the image is decoded.
"""

from __future__ import annotations

from fastapi import Request

from server.errors import ApiError

ACCEPTED_BODIES = "multipart/form-data with a 'file' field, or a raw body with Content-Type image/*"
RAW_TYPES = ("application/octet-stream",)


def declared_length(request: Request) -> int | None:
    """The body size the client declared in Content-Length, or None (chunked, or not a number)."""
    value = request.headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


async def read_body(request: Request) -> bytes:
    """The whole request body, streamed and not cached on the request."""
    chunks = [chunk async for chunk in request.stream() if chunk]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_upload(request: Request, extra_files: tuple[str, ...] = ()) -> tuple[bytes, dict[str, bytes]]:
    """The uploaded image bytes (multipart ``file`` field or raw ``image/*`` body) and any of the optional
    multipart file fields named in ``extra_files`` that were sent (a raw body carries only the image)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    extras: dict[str, bytes] = {}
    if media == "multipart/form-data":
        form = await request.form(max_files=1 + len(extra_files), max_fields=16)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                fields = ", ".join(form.keys()) or "none"
                raise ApiError(400, "missing_file", f"the multipart body has no file field named 'file' "
                               f"(fields sent: {fields})")
            data = await upload.read()
            for name in extra_files:
                part = form.get(name)
                if part is None:
                    continue
                if isinstance(part, str):
                    raise ApiError(400, "invalid_field", f"the multipart field {name!r} must be a file upload "
                                   f"(e.g. curl -F {name}=@file.png), not a text value")
                extras[name] = await part.read()
        finally:
            await form.close()
    else:
        data = await read_body(request)
        if data and not (media.startswith("image/") or media in RAW_TYPES):
            raise ApiError(415, "unsupported_media_type",
                           f"Content-Type {media or 'missing'!r} is not accepted; send {ACCEPTED_BODIES}")
    if not data:
        raise ApiError(400, "empty_body", f"the request carries no image bytes; send {ACCEPTED_BODIES}")
    return data, extras

"""Read images from a request: a raw image body, or multipart ``images`` files."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from service.codecs.images import MEDIA_TYPES
from service.errors import ApiError, bad_request, too_large, unprocessable, unsupported_media

# Aliases that clients send for the formats above.
_MEDIA_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/pjpeg": "image/jpeg",
}
ACCEPTED = (*MEDIA_TYPES, "application/octet-stream", "multipart/form-data")
_HINT = (
    "for example: curl -F images=@digit.png URL, "
    "or -H 'Content-Type: image/png' --data-binary @digit.png"
)


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None
    media_type: str


async def read_uploads(request: Request, max_images: int) -> list[Upload]:
    """The images of a request, at most ``max_images``; raises ApiError with what to fix."""
    content_type = request.headers.get("content-type", "")
    media = _MEDIA_ALIASES.get(
        content_type.split(";")[0].strip().lower(), content_type.split(";")[0].strip().lower()
    )
    if media == "multipart/form-data":
        return await _read_multipart(request, max_images)
    if media in MEDIA_TYPES or media == "application/octet-stream":
        body = await request.body()
        if not body:
            raise bad_request(f"the request body is empty: send the image bytes; {_HINT}")
        return [Upload(body, None, media)]
    if not media:
        raise unsupported_media(
            f"the request has no Content-Type; {_HINT}", accepted=list(ACCEPTED)
        )
    raise unsupported_media(
        f"Content-Type {media!r} is not supported; send one of {', '.join(ACCEPTED)}; {_HINT}",
        accepted=list(ACCEPTED),
    )


async def read_one_upload(request: Request, max_images: int, route: str) -> list[Upload]:
    """The request's one image (as a list of one), or 422 saying ``route`` takes exactly one."""
    uploads = await read_uploads(request, max_images)
    if len(uploads) != 1:
        raise unprocessable(f"{route} takes exactly one image; this request has {len(uploads)}")
    return uploads


async def _read_multipart(request: Request, max_images: int) -> list[Upload]:
    try:
        form = await request.form(max_files=max_images, max_fields=max_images + 16)
    except ApiError:
        raise
    except (MultiPartException, HTTPException) as error:
        reason = getattr(error, "message", None) or getattr(error, "detail", None) or str(error)
        if "Too many files" in str(reason):
            raise too_many(max_images) from None
        raise bad_request(f"the multipart body is malformed: {reason}") from None
    try:
        fields = form.getlist("images")
        if not fields:
            names = sorted(set(form.keys()))
            raise unprocessable(
                f"the multipart body has no 'images' field (fields: {names}); {_HINT}"
            )
        uploads = []
        for field in fields:
            if not isinstance(field, UploadFile):
                raise unprocessable(
                    "'images' must be a file part, not a text field; use -F images=@file"
                )
            data = await field.read()
            if not data:
                raise bad_request(f"the file {field.filename!r} is empty (0 bytes)")
            uploads.append(Upload(data, field.filename, field.content_type or ""))
        return uploads
    finally:
        await form.close()


def too_many(limit: int) -> ApiError:
    return too_large(
        f"too many images: at most {limit} per request; split them into several requests",
        limit_images=limit,
    )

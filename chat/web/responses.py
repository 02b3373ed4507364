"""Answers the HTTP routes share: a domain error as JSON, a stored file served safely."""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import FileResponse, JSONResponse

from chat.errors import ChatError, NotFound, RateLimited, ServiceUnavailable
from chat.app import App
from chat.storage.models import Upload


def error_response(exc: ChatError, language: str) -> JSONResponse:
    """The error's JSON with its status; ``Retry-After`` when the client should wait."""
    headers = {}
    if isinstance(exc, (RateLimited, ServiceUnavailable)):
        headers["Retry-After"] = str(max(1, int(exc.fields["retry_after"] + 0.999)))
    return JSONResponse({"error": exc.to_dict(language)}, status_code=exc.status, headers=headers)


# Images may be shown inline; every other type is only ever downloaded.
INLINE_TYPES = {"image/jpeg", "image/png"}


def attachment_response(service: App, upload: Upload, cache: str = "private, max-age=3600") -> FileResponse:
    """A stored file served safely (R7): the detected type, nosniff, a sandbox CSP,
    a sanitised name, ``attachment`` unless it is an image; Range requests work."""
    disposition = "inline" if upload.content_type in INLINE_TYPES else "attachment"
    ascii_name = upload.filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    headers = {
        "Content-Disposition": f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(upload.filename)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": cache,
    }
    path = service.store.path_for(upload.sha256)
    if not path.exists():
        raise NotFound("attachment.not_found", upload_id=upload.id)
    return FileResponse(path, media_type=upload.content_type, headers=headers)

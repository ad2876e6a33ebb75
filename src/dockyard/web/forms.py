"""Reading the dashboard's forms (application/x-www-form-urlencoded) without a multipart
dependency: the forms carry a few short fields, never files (archives go to /v1/sources)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from dockyard.errors import BadRequest, PayloadTooLarge

MAX_FORM_BYTES = 256 * 1024  # a variable's value may be 64 KiB; leave room for the rest


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("Send the page's form as it is (application/x-www-form-urlencoded).")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"The form is over {MAX_FORM_BYTES} bytes.")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("The form is not valid UTF-8.") from None
    return dict(pairs)

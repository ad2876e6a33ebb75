"""Reading JSON request bodies: capped in size and depth, with errors in words."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from dockyard.errors import BadRequest, PayloadTooLarge

MAX_DEPTH = 32


async def read_json(request: Request, *, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"The request body is over {max_bytes} bytes; send a smaller JSON document."
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"The request body is over {max_bytes} bytes; send a smaller JSON document."
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        # The raw depth check comes first: json's C decoder recurses.
        if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _bracket_depth(raw) > MAX_DEPTH:
            raise BadRequest(
                f"The JSON body is nested more than {MAX_DEPTH} levels deep.", code="too_deep"
            )
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc}.", code="invalid_json"
        ) from None
    # JSON's \uD800-style escapes can spell half of a UTF-16 pair, which is not text: no
    # database or environment can store it. Only then is the document walked.
    if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(document):
        raise BadRequest(
            "The JSON body holds an unpaired UTF-16 surrogate escape (\\uD800 to \\uDFFF), "
            "which is not text: send the character itself, or both halves of the pair.",
            code="invalid_json",
        )
    return document


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _holds_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(k) or _holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_lone_surrogate(item) for item in value)
    return False


def _bracket_depth(raw: bytes) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest

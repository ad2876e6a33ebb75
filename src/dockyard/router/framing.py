"""Where a message body ends, found incrementally in the bytes as they stream past.

A framer is fed each piece of data as it arrives and answers how many of those bytes
still belong to the body; the router forwards exactly that slice unchanged and treats the
rest as the next message. Chunked bodies are checked line by line (sizes, the CRLF after
each chunk, trailers) but never re-encoded, so a body costs one pass and no copies.
"""

from __future__ import annotations

from dockyard.router.http1 import BadMessage, Framing, check_trailer, chunk_size

_MAX_LINE = 8 * 1024  # a chunk-size or trailer line; real ones are a few bytes
_MAX_TRAILERS = 64


class LengthBody:
    """A body of Content-Length bytes."""

    __slots__ = ("done", "remaining")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> int:
        taken = min(len(data), self.remaining)
        self.remaining -= taken
        self.done = self.remaining == 0
        return taken


class UntilClose:
    """A response body that ends when the backend closes the connection."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: bytes) -> int:
        return len(data)


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedBody:
    """A chunked body, up to and including the empty line after its trailers."""

    __slots__ = ("_line", "_remaining", "_state", "_trailers", "done")

    def __init__(self) -> None:
        self.done = False
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailers = 0

    def feed(self, data: bytes) -> int:
        pos = 0
        end = len(data)
        while pos < end and not self.done:
            if self._state == _DATA:
                taken = min(self._remaining, end - pos)
                pos += taken
                self._remaining -= taken
                if self._remaining == 0:
                    self._state = _DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                self._line += data[pos:]
                if len(self._line) > _MAX_LINE:
                    raise BadMessage("a chunked body line is too long")
                return end
            line = self._line + data[pos : newline + 1]
            self._line = b""
            pos = newline + 1
            self._on_line(line)
        return pos

    def _on_line(self, line: bytes) -> None:
        if len(line) > _MAX_LINE:
            raise BadMessage("a chunked body line is too long")
        if not line.endswith(b"\r\n"):
            raise BadMessage("a chunked body line does not end in CRLF")
        if self._state == _SIZE:
            self._remaining = chunk_size(line)
            self._state = _DATA if self._remaining else _TRAILER
        elif self._state == _DATA_END:
            if line != b"\r\n":
                raise BadMessage("chunk data is longer than its size")
            self._state = _SIZE
        else:
            check_trailer(line)
            self._trailers += 1
            if line == b"\r\n":
                self.done = True
            elif self._trailers > _MAX_TRAILERS:
                raise BadMessage("too many trailer lines")


BodyFramer = LengthBody | UntilClose | ChunkedBody


def framer_for(framing: Framing, length: int) -> BodyFramer | None:
    """The framer for a response body, or None when the response has no body."""
    if framing is Framing.LENGTH:
        return LengthBody(length)
    if framing is Framing.CHUNKED:
        return ChunkedBody()
    if framing is Framing.UNTIL_CLOSE:
        return UntilClose()
    return None

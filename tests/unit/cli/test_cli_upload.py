"""The archive PUT: exact length, gzip type, no Authorization, streamed."""

from __future__ import annotations

from pathlib import Path

import httpx

from dockyard.cli.client.upload import CHUNK_SIZE, put_file


class RecordingTransport(httpx.BaseTransport):
    """Reads the body chunk by chunk, as a server would (MockTransport buffers it first)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.headers = httpx.Headers()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers = request.headers
        assert isinstance(request.stream, httpx.SyncByteStream)
        self.chunks = list(request.stream)
        return httpx.Response(200, json={"source": {"id": "s", "size": sum(map(len, self.chunks))}})


def test_put_streams_the_file_with_its_exact_length_and_no_credentials(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    payload = b"\x1f\x8b" + bytes(range(256)) * (CHUNK_SIZE // 100)
    archive.write_bytes(payload)
    transport = RecordingTransport()
    size = put_file("http://dock.test/v1/sources/s?token=up", archive, transport=transport)
    assert size == len(payload)
    assert b"".join(transport.chunks) == payload
    assert len(transport.chunks) > 1  # streamed from disk, not read whole
    assert transport.headers["content-length"] == str(len(payload))
    assert transport.headers["content-type"] == "application/x-gzip"
    assert "authorization" not in transport.headers
    assert "transfer-encoding" not in transport.headers


def test_a_refused_upload_does_not_show_the_token(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"\x1f\x8bxx")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="boom")

    from dockyard.cli.client.errors import ApiError

    try:
        put_file(
            "http://dock.test/v1/sources/s?token=secret-up",
            archive,
            transport=httpx.MockTransport(handler),
        )
    except ApiError as error:
        assert "secret-up" not in error.message
        assert "/v1/sources/s" in error.message
    else:
        raise AssertionError("expected ApiError")

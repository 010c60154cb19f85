"""Small HTTP helpers shared by the protocol modules: JSON in and out, streamed video, SSE."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from reelay_sim import media
from reelay_sim.knobs import Knobs


class BadRequest(Exception):
    """A request the protocol must refuse as malformed; ``str(exc)`` is the reason."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (UTF-8, non-ASCII kept as is, like the providers do)."""
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        headers=headers,
        content_type="application/json; charset=utf-8",
    )


def read_json(request: Request) -> Any:
    """The request's JSON body; ``BadRequest`` when it is missing or not JSON."""
    data = request.get_data(cache=True)
    if not data:
        raise BadRequest("request body must be JSON")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc


def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    body = read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def sse_response(events: Iterable[Any]) -> Response:
    """A ``text/event-stream`` answer: each event is a JSON ``data:`` line; ``[DONE]`` ends it."""

    def lines() -> Iterator[bytes]:
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return Response(lines(), content_type="text/event-stream; charset=utf-8", headers={"Cache-Control": "no-cache"})


def video_response(
    request: Request,
    seed: str,
    size: int,
    knobs: Knobs,
    stop: threading.Event,
    *,
    truncate: bool = False,
    bytes_per_second: int = 0,
) -> Response:
    """Stream the video of ``seed`` with the download knobs applied; honours one ``Range`` and ``If-Range``.

    The ETag names the exact bytes (seed and size), so a client resuming with ``If-Range``
    gets a 206 for the same video and the whole new one (200) when it changed.
    ``truncate`` (a task's ``[sim:truncate]``) closes the connection after half of the bytes this
    answer announces, whatever the range; ``bytes_per_second`` (``[sim:drip]``) replaces the knobs'
    rate when set.
    """
    total = media.video_size(size)
    start, end, status = 0, total, 200
    etag = f'"{seed}-{total}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag}
    if_range = request.headers.get("If-Range")
    if request.range is not None and (if_range is None or if_range == etag):
        window = request.range.range_for_length(total)
        if window is None:
            return Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        start, end = window
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    headers["Content-Length"] = str(end - start)
    limit = knobs.truncate_download_at
    if truncate:
        half = max(1, (end - start) // 2)
        limit = half if limit is None else min(limit, half)
    body = _paced(
        media.video_chunks(seed, size, start, end),
        rate=bytes_per_second or knobs.download_bytes_per_second,
        limit=limit,
        stop=stop,
    )
    response = Response(body, status=status, headers=headers, content_type="video/mp4", direct_passthrough=True)
    return response


def _paced(chunks: Iterator[bytes], *, rate: int, limit: int | None, stop: threading.Event) -> Iterator[bytes]:
    """Yield ``chunks`` at most ``rate`` bytes/s (0: no limit), stopping after ``limit`` bytes."""
    piece = min(media.BLOCK, max(1024, rate // 20)) if rate else media.BLOCK
    sent = 0
    began = time.monotonic()
    for chunk in chunks:
        for offset in range(0, len(chunk), piece):
            part = chunk[offset : offset + piece]
            if limit is not None and sent + len(part) >= limit:
                if limit > sent:
                    yield part[: limit - sent]
                return
            if rate:
                due = began + (sent + len(part)) / rate - time.monotonic()
                if due > 0 and stop.wait(due):
                    return
            elif stop.is_set():
                return
            yield part
            sent += len(part)

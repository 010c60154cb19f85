"""Previews of a copied video: a thumbnail and a spritesheet, made at ingest (the OpenAI ``variant``s).

Made only for a task whose request asks for them (``previews: true``; every video created through
``/v1/videos`` does, as OpenAI's clients expect them): a preview costs two S3 PUTs, a ranged read
of the video and the rendering time, which nobody should pay for a task whose previews are never read.

Made with PyAV (``av``), FFmpeg's Python bindings: its wheels carry their own FFmpeg libraries
for manylinux x86_64 and aarch64 (so it runs in Lambda on arm64 with no system package), it is
well kept (releases every few months), and it decodes from a seekable file object, so the video
is read from S3 by ranged GETs instead of being downloaded first. Its libraries are ~130 MB
unpacked, so it is optional: without it, no previews are made and those variants are a 404.

- thumbnail: one JPEG frame from a tenth of the way in, at most ``THUMB_WIDTH`` wide;
- spritesheet: ``TILES`` frames spread over the video, each ``TILE_WIDTH`` wide, in a grid
  (FFmpeg's ``tile`` filter), one JPEG.
Keys are fixed per task (``previews/<id>/thumbnail.jpg``, ``previews/<id>/spritesheet.jpg``), so a
route finds a preview by key, and a repeated ingest writes nothing twice (puts are conditional).
They are outside ``tasks/<id>/``, which holds a task's outputs and nothing else.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from typing import Any

from aws_lambda_powertools import Logger

from reelay.aws import ResultBucket
from reelay.models import Output, Task, TaskKind

logger = Logger(child=True)

THUMB_WIDTH = 640
TILE_WIDTH = 160
TILES = (5, 5)  # columns, rows
PREVIEW_TYPE = "image/jpeg"
VARIANTS = ("thumbnail", "spritesheet")


def preview_key(task_id: str, variant: str) -> str:
    """Where a preview of a task's video lives in the results bucket."""
    return f"previews/{task_id}/{variant}.jpg"


def wanted(task: Task) -> bool:
    """Whether a task's request asked for previews (every video made through ``/v1/videos`` does)."""
    return bool(task.request.get("previews"))


def available() -> bool:
    """Whether PyAV is installed (previews are optional)."""
    return importlib.util.find_spec("av") is not None


class PreviewMaker:
    """Makes and stores the previews of a task's first video output; never fails the task."""

    def __init__(self, bucket: ResultBucket) -> None:
        self._bucket = bucket

    def make(self, task: Task, outputs: list[Output]) -> list[str]:
        """Store the previews of ``task``'s video; the keys written (none without PyAV or a video, or
        for a task that did not ask for them: ``previews`` in its request)."""
        video = next((o for o in outputs if o.content_type.startswith("video/")), None)
        if video is None or task.kind is TaskKind.IMAGE or not wanted(task) or not available():
            return []
        written = []
        try:
            thumbnail, spritesheet = render(self._bucket.reader(video.key, size=video.bytes))
            for variant, data in (("thumbnail", thumbnail), ("spritesheet", spritesheet)):
                key = preview_key(task.id, variant)
                self._bucket.put(key, data, content_type=PREVIEW_TYPE, metadata={"task-id": task.id})
                written.append(key)
        except Exception as exc:  # a preview is a nicety: the copied video is what matters
            logger.warning("previews not made", extra={"task_id": task.id, "error": f"{type(exc).__name__}: {exc}"})
        return written


def render(source: Any) -> tuple[bytes, bytes]:
    """(thumbnail JPEG, spritesheet JPEG) of the video in ``source`` (a path or a seekable file)."""
    import av

    with av.open(source) as container:
        stream = container.streams.video[0]
        duration = _seconds(container, stream)
        columns, rows = TILES
        count = columns * rows
        times = [duration * (i + 0.5) / count for i in range(count)]
        frames = _frames_at(container, stream, [duration * 0.1, *times])
    thumb = _jpeg(_scaled(frames[0], THUMB_WIDTH))
    tiles = [_scaled(f, TILE_WIDTH) for f in frames[1:]]
    return thumb, _jpeg(_tiled(tiles, columns, rows))


def _seconds(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return 0.0


def _frames_at(container: Any, stream: Any, times: list[float]) -> list[Any]:
    """The first frame at or after each time (decoding forward; the last frame for times past the end)."""
    wanted = sorted(times)
    found: list[Any] = []
    last = None
    for frame in container.decode(stream):
        last = frame
        at = float(frame.time or 0.0)
        while wanted and at + 1e-6 >= wanted[0]:
            found.append(frame)
            wanted.pop(0)
        if not wanted:
            break
    if last is None:
        raise ValueError("the video has no frames")
    found += [last] * len(wanted)
    order = sorted(range(len(times)), key=lambda i: times[i])
    result: list[Any] = [None] * len(times)
    for rank, index in enumerate(order):
        result[index] = found[rank]
    return result


def _scaled(frame: Any, width: int) -> Any:
    width = min(width, frame.width) // 2 * 2
    height = max(2, round(frame.height * width / frame.width) // 2 * 2)
    return frame.reformat(width=width, height=height, format="yuvj420p")


def _tiled(frames: list[Any], columns: int, rows: int) -> Any:
    """One frame: ``frames`` in a grid, through FFmpeg's ``tile`` filter."""
    import av.filter

    first = frames[0]
    graph = av.filter.Graph()
    source = graph.add_buffer(
        width=first.width, height=first.height, format=first.format.name, time_base=Fraction(1, 25)
    )
    tile = graph.add("tile", f"{columns}x{rows}")
    sink = graph.add("buffersink")
    source.link_to(tile)
    tile.link_to(sink)
    graph.configure()
    for index, frame in enumerate(frames):
        frame = frame.reformat(width=first.width, height=first.height, format=first.format.name)
        frame.pts = index
        frame.time_base = Fraction(1, 25)
        graph.push(frame)
    graph.push(None)
    return graph.pull()


def _jpeg(frame: Any) -> bytes:
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width = frame.width
    codec.height = frame.height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame = frame.reformat(format="yuvj420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in codec.encode(frame))
    data += b"".join(bytes(p) for p in codec.encode(None))
    return data

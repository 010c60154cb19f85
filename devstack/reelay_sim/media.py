"""Result bytes: real MP4 videos of any size, streamed, and real PNG images.

The base video ``assets/sample.mp4`` (about 24 KB: 2 s of a 320x180 ``testsrc2`` pattern, H.264
baseline, 12 fps, moov before mdat) was made once with the ffmpeg binary that the
``imageio-ffmpeg`` wheel ships, installed in a throw-away venv outside the project::

    ffmpeg -f lavfi -i "testsrc2=size=320x180:rate=12:duration=2" -c:v libx264 -profile:v baseline \\
        -pix_fmt yuv420p -crf 30 -movflags +faststart -map_metadata -1 -fflags +bitexact \\
        -flags:v +bitexact sample.mp4

A task's video is that file followed by one top-level ISO BMFF ``free`` box (a box players skip)
whose payload is filler derived from the task's seed (``"<protocol>/<id>"``), sized so the whole
file is exactly the requested size. Appending after the existing boxes leaves every offset in
``moov`` valid. The filler is a 64 KiB SHAKE-256 block of the seed, rotated by one byte per block,
so every task's bytes differ, the same task always gives the same bytes, any byte range can be
produced without the ones before it, and a file of any size streams in constant memory.
Files over 4 GiB use the box's 64-bit ``largesize`` header.

Images are generated PNGs: a gradient whose colours derive from the image id, in the aspect
ratio the request's ``size`` asks for (1:1, 3:2 or 2:3). ``assets/sample.png`` (384x256) is one of
them, written once with ``png_bytes("reelay-sim-sample", "3:2")``, and served as a fixed input
image for image-to-video requests.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path

ASSETS = Path(__file__).with_name("assets")
BLOCK = 64 * 1024
_MIN_FILLER = 32  # bytes of seed-derived filler every video carries, so no two tasks share bytes
_MAX_BOX32 = 0xFFFFFFFF


@cache
def sample_mp4() -> bytes:
    """The base MP4 every video starts with."""
    return (ASSETS / "sample.mp4").read_bytes()


@cache
def sample_png() -> bytes:
    """The fixed input image served at ``/files/assets/sample.png``."""
    return (ASSETS / "sample.png").read_bytes()


def min_video_size() -> int:
    """The smallest size a video can have: the base file plus a ``free`` box with some filler."""
    return len(sample_mp4()) + 8 + _MIN_FILLER


def video_size(requested: int) -> int:
    """The size actually served for a requested size (clamped up to ``min_video_size``)."""
    return max(requested, min_video_size())


def _free_header(total: int) -> bytes:
    box = total - len(sample_mp4())
    if box <= _MAX_BOX32:
        return struct.pack(">I4s", box, b"free")
    return struct.pack(">I4sQ", 1, b"free", box)


@lru_cache(maxsize=64)
def _filler_block(seed: str) -> bytes:
    return hashlib.shake_256(f"reelay-sim:{seed}".encode()).digest(BLOCK)


def _filler(seed: str, start: int, end: int) -> Iterator[bytes]:
    """Filler payload bytes ``[start, end)``: block ``i`` is the seed block rotated by ``i``."""
    block = _filler_block(seed)
    position = start
    while position < end:
        index, offset = divmod(position, BLOCK)
        shift = index % BLOCK
        chunk = block[shift:] + block[:shift]
        piece = chunk[offset : min(BLOCK, offset + end - position)]
        yield piece
        position += len(piece)


def video_chunks(seed: str, size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the ``size``-byte video of ``seed``, in chunks of at most 64 KiB."""
    total = video_size(size)
    end = total if end is None else min(end, total)
    prefix = sample_mp4() + _free_header(total)
    if start < len(prefix):
        head = prefix[start : min(end, len(prefix))]
        for offset in range(0, len(head), BLOCK):
            yield head[offset : offset + BLOCK]
    payload_start = max(start, len(prefix)) - len(prefix)
    payload_end = end - len(prefix)
    if payload_end > payload_start:
        yield from _filler(seed, payload_start, payload_end)


def video_sha256(seed: str, size: int) -> str:
    """SHA-256 (hex) of the whole video, computed by streaming it."""
    digest = hashlib.sha256()
    for chunk in video_chunks(seed, size):
        digest.update(chunk)
    return digest.hexdigest()


# --- images -----------------------------------------------------------------------------------

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_ASPECT_PIXELS = {"1:1": (256, 256), "3:2": (384, 256), "2:3": (256, 384)}


def parse_size(size: str) -> tuple[int, int]:
    """Parse ``"WxH"`` (1..8192 each); raise ``ValueError`` otherwise."""
    match = _SIZE.match(size)
    if not match:
        raise ValueError(f"size must look like 1024x1024, got {size!r}")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise ValueError(f"size out of range: {size!r}")
    return width, height


def aspect_for(size: str | None) -> str:
    """The aspect ratio the provider makes for a requested size: 1:1, 3:2 (wider) or 2:3 (taller)."""
    if size is None:
        return "1:1"
    width, height = parse_size(size)
    return "1:1" if width == height else ("3:2" if width > height else "2:3")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(seed: str, aspect: str = "1:1") -> bytes:
    """A real RGB PNG for ``seed`` in ``aspect``: a vertical gradient between two seed colours."""
    width, height = _ASPECT_PIXELS[aspect]
    top = hashlib.sha256(seed.encode()).digest()
    first, second = top[:3], top[3:6]
    rows = []
    for y in range(height):
        color = bytes(a + (b - a) * y // max(1, height - 1) for a, b in zip(first, second, strict=True))
        rows.append(b"\x00" + color * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + _png_chunk(b"IEND", b"")
    )


def sniff_image(data: bytes) -> str | None:
    """The image type of ``data`` by its magic bytes: ``"png"``, ``"jpeg"``, ``"webp"`` or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None

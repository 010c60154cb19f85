"""Input images for image edits: read from the caller's uploads area or fetched from checked URLs.

Inputs are small (at most ``MAX_IMAGE_BYTES`` each, as providers accept), so they are read
whole. Bucket keys are only read under ``uploads/`` (the API already refused any key outside
the caller's own prefix; this is the second line: never a task's output). URLs go through the
one fetcher of untrusted URLs (``reelay.fetch``), with its address checks on every hop, and
must be an image.
"""

from __future__ import annotations

import mimetypes
from posixpath import basename
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reelay.aws import ResultBucket
from reelay.errors import RequestInvalid, ResultFetchError, UnsafeResultUrl
from reelay.fetch_policy import Limits, ResultGone, ResultNotMedia, ResultTooLarge, ResultTooSlow, media_type
from reelay.models import UPLOADS_ROOT, ImageRequest
from reelay.providers.base import ImageInput

if TYPE_CHECKING:
    from reelay.fetch import Fetcher

MAX_IMAGE_BYTES = 10 * 1024 * 1024
_IMAGE_LIMITS = Limits(max_bytes=MAX_IMAGE_BYTES, deadline_seconds=30.0, min_bytes_per_second=16 * 1024)


class ImageInputs:
    """Loads the images an ``ImageRequest`` names."""

    def __init__(self, bucket: ResultBucket, fetcher: Fetcher) -> None:
        self._bucket = bucket
        self._fetcher = fetcher

    def load(self, request: ImageRequest) -> list[ImageInput]:
        images = [self._from_bucket(key) for key in request.image_keys]
        images += [self._from_url(str(url)) for url in request.image_urls]
        return images

    def _from_bucket(self, key: str) -> ImageInput:
        if not key.startswith(UPLOADS_ROOT) or ".." in key.split("/"):
            raise RequestInvalid(f"image_keys: {key!r} is not an upload", field="image_keys")
        head = self._bucket.head(key)
        if head is None:
            raise RequestInvalid(f"image_keys: no object {key!r} in the results bucket", field="image_keys")
        if int(head.get("ContentLength", 0)) > MAX_IMAGE_BYTES:
            raise RequestInvalid(f"image_keys: {key!r} is larger than 10 MB", field="image_keys")
        content_type = str(head.get("ContentType") or mimetypes.guess_type(key)[0] or "application/octet-stream")
        return ImageInput(
            filename=basename(key) or "image",
            content=self._bucket.read_range(key, MAX_IMAGE_BYTES),
            content_type=content_type,
        )

    def _from_url(self, url: str) -> ImageInput:
        host = urlsplit(url).hostname or "?"
        try:
            body = self._fetcher.open(url, limits=_IMAGE_LIMITS)
        except UnsafeResultUrl as exc:
            raise RequestInvalid(f"image_urls: {exc.message}", field="image_urls") from exc
        except ResultGone as exc:
            raise RequestInvalid(f"image_urls: {host} answered HTTP {exc.status}", field="image_urls") from exc
        try:
            if body.response.status_code != 200:
                raise RequestInvalid(
                    f"image_urls: {host} answered HTTP {body.response.status_code}", field="image_urls"
                )
            content = bytearray()
            for chunk in body.chunks():
                content += chunk
            kind = media_type(body.response.headers.get("content-type"), bytes(content[:16]))
            if not kind.startswith("image/"):
                raise ResultNotMedia(f"{kind} is not an image")
        except (ResultTooLarge, ResultNotMedia) as exc:
            raise RequestInvalid(f"image_urls: {exc.message}", field="image_urls") from exc
        except ResultTooSlow as exc:
            raise ResultFetchError(f"fetching an input image was too slow: {exc.message}") from exc
        finally:
            body.close()
        path = urlsplit(str(body.response.url)).path
        return ImageInput(filename=basename(path) or "image", content=bytes(content), content_type=kind)

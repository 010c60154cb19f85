"""Input images for image edits: read from the results bucket or fetched from checked URLs.

Inputs are small (at most ``MAX_IMAGE_BYTES`` each, as providers accept), so they are read
whole; URLs pass the same SSRF guard as result URLs, on every redirect hop.
"""

from __future__ import annotations

import mimetypes
from posixpath import basename
from urllib.parse import urljoin, urlsplit

import httpx

from reelay.aws import ResultBucket
from reelay.errors import RequestInvalid, ResultFetchError
from reelay.ingest import MAX_REDIRECTS, UrlGuard
from reelay.models import ImageRequest
from reelay.providers.base import ImageInput

MAX_IMAGE_BYTES = 10 * 1024 * 1024


class ImageInputs:
    """Loads the images an ``ImageRequest`` names."""

    def __init__(self, bucket: ResultBucket, guard: UrlGuard, *, client: httpx.Client | None = None) -> None:
        self._bucket = bucket
        self._guard = guard
        self._client = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))

    def load(self, request: ImageRequest) -> list[ImageInput]:
        images = [self._from_bucket(key) for key in request.image_keys]
        images += [self._from_url(str(url)) for url in request.image_urls]
        return images

    def _from_bucket(self, key: str) -> ImageInput:
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
        for _ in range(MAX_REDIRECTS + 1):
            self._guard.check(url)
            try:
                with self._client.stream("GET", url, follow_redirects=False) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise RequestInvalid(
                            f"image_urls: {urlsplit(url).netloc} answered HTTP {response.status_code}",
                            field="image_urls",
                        )
                    content = bytearray()
                    for chunk in response.iter_bytes():
                        content += chunk
                        if len(content) > MAX_IMAGE_BYTES:
                            raise RequestInvalid("image_urls: an image is larger than 10 MB", field="image_urls")
                    content_type = response.headers.get("content-type", "").split(";")[0] or "image/png"
            except httpx.HTTPError as exc:
                raise ResultFetchError(f"fetching an input image failed: {type(exc).__name__}") from exc
            return ImageInput(
                filename=basename(urlsplit(url).path) or "image", content=bytes(content), content_type=content_type
            )
        raise RequestInvalid("image_urls: too many redirects", field="image_urls")

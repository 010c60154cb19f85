"""What the three protocol modules share: their base class, the context they run in, and the
rules that decide how a new task will end.

Prompt directives (anywhere in a prompt, case-insensitive):

- ``[sim:refuse]``: the task ends failed with a content-policy refusal (like ``refuse_content``);
  synchronous endpoints (images, chat) answer 400 ``content_policy_violation`` instead.
- ``[sim:fail]``: the task ends failed with a generic generation failure.
- ``[sim:invalid_image]``: the task ends failed because its input image cannot be fetched.
- ``[sim:seconds=N]``: this task takes N seconds instead of ``generation_seconds``.

Precedence when several apply: invalid image, then refusal, then generic failure.
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from werkzeug.wrappers import Request, Response

from reelay_sim import media
from reelay_sim.knobs import Knobs
from reelay_sim.state import CONTENT_POLICY, GENERATION_FAILED, INVALID_IMAGE, Outcome, SimState, Task

MAX_IMAGE_BYTES = 10 * 1024 * 1024
_DIRECTIVE = re.compile(r"\[sim:([a-z_]+)(?:=([0-9.]+))?\]", re.IGNORECASE)

Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    """One endpoint of a protocol: ``path`` is a werkzeug rule relative to the protocol's prefix."""

    method: str
    path: str
    kind: str
    handler: Handler


class Context:
    """What a protocol handler needs from the running simulator."""

    def __init__(self, state: SimState, api_keys: dict[str, str], stop: threading.Event) -> None:
        self.state = state
        self.api_keys = dict(api_keys)
        self.stop = stop
        self.url = ""  # set once the server is bound

    def knobs(self, protocol: str) -> Knobs:
        """The live knobs of ``protocol`` (read single values; change them only under the lock)."""
        return self.state.knobs[protocol]

    def key_ok(self, protocol: str, key: str | None) -> bool:
        """Whether ``key`` is accepted by ``protocol``."""
        if not key:
            return False
        with self.state.lock:
            return key == self.api_keys[protocol] or key in self.knobs(protocol).extra_keys

    def file_url(self, folder: str, name: str) -> str:
        """A CDN-like result URL the simulator serves without auth."""
        return f"{self.url}/files/{folder}/{name}"

    def sleep(self, seconds: float) -> None:
        """Wait, but give up at once when the simulator stops."""
        if seconds > 0:
            self.stop.wait(seconds)


def directives(prompt: str) -> dict[str, str | None]:
    """The ``[sim:...]`` directives in a prompt, lower-cased name -> value (or None)."""
    return {m[1].lower(): m[2] for m in _DIRECTIVE.finditer(prompt or "")}


def generation_seconds(knobs: Knobs, prompt: str) -> float:
    """This task's generation time: the ``[sim:seconds=N]`` directive, else the knob."""
    value = directives(prompt).get("seconds")
    try:
        return max(0.0, float(value)) if value is not None else knobs.generation_seconds
    except ValueError:
        return knobs.generation_seconds


def plan_outcome(knobs: Knobs, prompt: str, *, image_error: str | None = None) -> Outcome:
    """How a new task will end, from its prompt directives, the knobs and its image check."""
    found = directives(prompt)
    if image_error is not None:
        return Outcome(INVALID_IMAGE, message=image_error)
    if "invalid_image" in found:
        return Outcome(INVALID_IMAGE)
    if "refuse" in found or knobs.refuse_content:
        return Outcome(CONTENT_POLICY)
    if "fail" in found:
        return Outcome(GENERATION_FAILED)
    return Outcome()


def refused(knobs: Knobs, prompt: str) -> bool:
    """Whether a synchronous request (images, chat) is refused for content."""
    return knobs.refuse_content or "refuse" in directives(prompt)


def check_image_urls(urls: list[str], timeout: float = 5.0) -> str | None:
    """Fetch each input image like a provider would; the first problem as text, or None."""
    for url in urls:
        try:
            with httpx.Client(timeout=timeout, follow_redirects=True) as client, client.stream("GET", url) as reply:
                if reply.status_code != 200:
                    return f"cannot access image url {url}: HTTP {reply.status_code}"
                data = bytearray()
                for chunk in reply.iter_bytes():
                    data.extend(chunk)
                    if len(data) > MAX_IMAGE_BYTES:
                        return f"image at {url} is larger than 10 MB"
        except httpx.HTTPError as exc:
            return f"cannot access image url {url}: {exc.__class__.__name__}"
        if media.sniff_image(bytes(data[:16])) is None:
            return f"image at {url} is not a JPG, PNG or WebP"
    return None


def is_http_url(value: Any) -> bool:
    """A plausible http(s) URL string."""
    return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def retry_after_header(status: int, retry_after: float | None) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) for a 429; nothing for other statuses."""
    if status != 429:
        return {}
    return {"Retry-After": str(max(1, math.ceil(retry_after or 1)))}


def new_id(prefix: str = "") -> str:
    """A fresh random id."""
    return f"{prefix}{uuid.uuid4().hex}"


class ProtocolHandler(ABC):
    """One provider protocol served under ``prefix``."""

    name: ClassVar[str]
    prefix: ClassVar[str]
    callbacks: ClassVar[bool] = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def knobs(self) -> Knobs:
        return self.ctx.knobs(self.name)

    @property
    def base_url(self) -> str:
        return f"{self.ctx.url}{self.prefix}"

    @abstractmethod
    def routes(self) -> list[Route]:
        """The protocol's endpoints."""

    @abstractmethod
    def credential(self, request: Request) -> str | None:
        """The API key the request carries, the way this protocol sends it."""

    @abstractmethod
    def error(
        self, status: int, message: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> Response:
        """An error answer in this protocol's own shape (429s carry ``Retry-After``, default 1 s)."""

    @abstractmethod
    def render(self, task: Task) -> dict[str, Any]:
        """The task as this protocol's status endpoint shows it."""

    def before(self, request: Request, key: str, kind: str) -> Response | None:
        """Account-level checks after auth (rate limits); an answer stops the request."""
        return None

    def hang(self) -> None:
        """The ``create_hang_seconds`` pause between accepting a create and answering it."""
        self.ctx.sleep(self.knobs.create_hang_seconds)

    def start_task(self, task: Task) -> Task:
        """Store a new task and return it."""
        self.ctx.state.add_task(task)
        return task

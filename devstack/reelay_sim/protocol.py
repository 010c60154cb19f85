"""What the three protocol modules share: their base class, the context they run in, and the
rules that decide how a new task will end.

Prompt directives (anywhere in a prompt, case-insensitive):

- ``[sim:refuse]``: the task ends failed with a content-policy refusal (like ``refuse_content``);
  synchronous endpoints (images, chat) answer 400 ``content_policy_violation`` instead.
- ``[sim:fail]``: the task ends failed with a generic generation failure.
- ``[sim:invalid_image]``: the task ends failed because its input image cannot be fetched.
- ``[sim:seconds=N]``: this task takes N seconds instead of ``generation_seconds``.

Precedence when several apply: invalid image, then refusal, then generic failure.

Per-task fault directives, for runs where only *some* tasks misbehave (the chaos run). Create
faults count the create attempts that carry the same prompt (per protocol, in
``SimState.create_attempts``): only attempts with a valid body that passed the account's own
checks (rate limit, concurrency, balance), so an "accepted" fault always meets a create that makes
a task. Status faults count this task's status calls, download faults its result downloads. Each
error answer has the protocol's own wire shape (``ProtocolHandler.error``).

- ``[sim:create_429=N]``: the first N create attempts with this prompt answer 429 (nothing made).
- ``[sim:create_500]``: the first create attempt after those answers 500 with nothing made; a
  re-sent create succeeds.
- ``[sim:create_500_accepted]``: that attempt is accepted (the task exists and runs), then answers
  500 -- the provider took the job and the answer was lost.
- ``[sim:create_hang=S]``: that attempt is accepted and recorded, then its answer waits S seconds
  (past the client's timeout); later attempts answer at once.
- ``[sim:status_429=N]``, ``[sim:status_500=N]``: the first N status calls for this task answer
  429 (then, when both are given, the next N answer 500).
- ``[sim:truncate]``: every download of this task's result announces the full length and closes
  after half of it; ``[sim:truncate_once]``: only the first download does.
- ``[sim:gone]``: the result answers 404 (a permanently missing result; status still says done).
- ``[sim:drip]`` / ``[sim:drip=B]``: downloads of this task's result trickle at B bytes/s
  (default 2048), so a copy can be interrupted half-way.
- Callback directives (``[sim:no_callback]``, ``[sim:callback_once]``) are in ``callbacks``.

``[tag:<label>]`` (not a directive; any non-space label) marks a prompt so a harness can count the
provider tasks made for it (``Simulator.counters()["tags"]``, ``GET /_sim/counters``).
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
_DIRECTIVE = re.compile(r"\[sim:([a-z0-9_]+)(?:=([0-9.]+))?\]", re.IGNORECASE)
_TAG = re.compile(r"\[tag:([^\]\s]+)\]", re.IGNORECASE)
DEFAULT_DRIP_BYTES_PER_SECOND = 2048

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


def tags(prompt: str) -> list[str]:
    """The ``[tag:<label>]`` markers of a prompt, in order."""
    return [m[1] for m in _TAG.finditer(prompt or "")]


def _count(found: dict[str, str | None], name: str) -> int:
    """A directive's whole-number value (0 when absent or malformed)."""
    value = found.get(name)
    try:
        return max(0, int(float(value))) if value is not None else 0
    except ValueError:
        return 0


@dataclass(frozen=True)
class CreateFault:
    """What a create attempt's per-task directives do to it (``CreateFault()``: nothing)."""

    refuse: int | None = None  # answer this status at once; nothing is made
    accepted_error: int | None = None  # make the task, then answer this status
    hang_seconds: float = 0.0  # make the task, then wait this long before answering


def create_fault(prompt: str, attempt: int) -> CreateFault:
    """The fault for the ``attempt``-th (1-based) create carrying ``prompt``."""
    found = directives(prompt)
    refused_429 = _count(found, "create_429")
    if attempt <= refused_429:
        return CreateFault(refuse=429)
    if attempt != refused_429 + 1:
        return CreateFault()
    if "create_500" in found:
        return CreateFault(refuse=500)
    hang = 0.0
    if "create_hang" in found:
        try:
            hang = max(0.0, float(found["create_hang"] or 0))
        except ValueError:
            hang = 0.0
    return CreateFault(accepted_error=500 if "create_500_accepted" in found else None, hang_seconds=hang)


def status_fault(prompt: str, call: int) -> int | None:
    """The status to answer for the ``call``-th (1-based) status call of a task, or None."""
    found = directives(prompt)
    first_429 = _count(found, "status_429")
    if call <= first_429:
        return 429
    if call <= first_429 + _count(found, "status_500"):
        return 500
    return None


@dataclass(frozen=True)
class DownloadFault:
    """What a result download's per-task directives do to it."""

    gone: bool = False  # answer 404
    truncate: bool = False  # close after half of the announced bytes
    bytes_per_second: int = 0  # 0: the knobs' rate


def download_fault(prompt: str, download: int) -> DownloadFault:
    """The fault for the ``download``-th (1-based) download of a task's result."""
    found = directives(prompt)
    drip = 0
    if "drip" in found:
        drip = _count(found, "drip") or DEFAULT_DRIP_BYTES_PER_SECOND
    return DownloadFault(
        gone="gone" in found,
        truncate="truncate" in found or ("truncate_once" in found and download == 1),
        bytes_per_second=drip,
    )


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

    def hang(self, fault: CreateFault | None = None) -> None:
        """The pause between accepting a create and answering it: ``create_hang_seconds``, or the
        task's ``[sim:create_hang=S]`` when longer."""
        self.ctx.sleep(max(self.knobs.create_hang_seconds, fault.hang_seconds if fault else 0.0))

    def create_fault(self, prompt: str) -> CreateFault:
        """Count a (valid) create attempt carrying ``prompt``; the per-task fault it meets."""
        return create_fault(prompt, self.ctx.state.count_create(self.name, prompt))

    def create_refusal(self, fault: CreateFault) -> Response | None:
        """The answer of a create the task's directives refuse outright (nothing made), or None."""
        if fault.refuse is None:
            return None
        return self.error(fault.refuse, "Internal server error" if fault.refuse >= 500 else None)

    def status_refusal(self, task: Task) -> Response | None:
        """Count a status call of ``task``; the error its ``status_*`` directives ask for, or None."""
        status = status_fault(task.prompt, self.ctx.state.count_status(task))
        return None if status is None else self.error(status)

    def download_fault(self, task: Task) -> DownloadFault:
        """Count a download of ``task``'s result; what its download directives do to it."""
        return download_fault(task.prompt, self.ctx.state.count_download(task))

    def start_task(self, task: Task) -> Task:
        """Store a new task and return it."""
        self.ctx.state.add_task(task)
        return task

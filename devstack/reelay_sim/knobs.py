"""Run-time knobs: one set per protocol, changed with ``Simulator.configure`` or ``POST /_sim/config``.

Every knob has a default (``Simulator.reset`` brings them all back). Most knobs apply to every
protocol; a few belong to one protocol only (see ``PROTOCOL_ONLY``) and setting them on another is
an error. Knob shapes:

Common knobs
    ``generation_seconds`` (float, 3.0): how long a new task takes, start to terminal state.
    ``fail_next`` (int, 0): the next N valid creates answer HTTP 500 in the protocol's error shape.
    ``fail_next_accepted`` (bool, False): when True those failing creates are *accepted* first (the
    task exists and runs) and only their answer is a 500 -- a gateway error after the provider took
    the job.
    ``force`` (dict kind -> list of status codes, {}): the next requests of a kind answer those
    statuses in turn, before auth or validation, e.g. ``force={"create": [429, 429], "status": [500]}``.
    Kinds per protocol are in ``KINDS`` (``"*"`` matches any request of the protocol). Codes are
    HTTP statuses 400-599; sorahk also takes its body-only business codes 1001 and 1012 (HTTP 200).
    Setting ``force`` replaces the queues of the kinds it names and leaves the others.
    ``refuse_content`` (bool, False): new tasks end failed with a content-policy refusal.
    ``create_hang_seconds`` (float, 0): a create is accepted and recorded, then the answer waits
    this long (to make a client time out on a create the provider did take).
    ``video_bytes`` (int, 262144): size of the MP4 a task's result serves, fixed when the task
    succeeds (clamped up to the smallest valid size, about 24 KB).
    ``download_bytes_per_second`` (int, 0 = unlimited): throttle result downloads.
    ``truncate_download_at`` (int or None): downloads announce the full Content-Length but the
    connection closes after this many bytes.
    ``extra_keys`` (list of str, []): more API keys accepted besides the default one.
    ``fetch_images`` (bool, False): GET image-to-video input URLs at create; a URL that does not
    answer 200 with a JPEG/PNG/WebP of at most 10 MB makes the task fail as an invalid image.

generate_task only
    ``rate_limit_per_minute`` (int, 60): accepted requests per key in any 60 s window; more -> 429.
    ``max_concurrent`` (int, 10): non-terminal tasks per key; a create beyond -> 429.
    ``callback_mode`` ("normal" | "duplicate" | "out_of_order" | "late" | "never", "normal").
    ``callback_copies`` (int, 5): how many identical terminal callbacks "duplicate" sends at once.
    ``callback_delay_seconds`` (float, 2.0): how long "late" waits before sending.
    ``callback_body_result_url`` (str or None): written into callback bodies' ``resultUrls``
    instead of the real URL (the status endpoint keeps the real one).
    ``status_result_url`` (str or None): the result URL the status endpoint (and the callbacks)
    answer instead of the real one -- a refused or malformed result URL, as a provider might send.
    ``callback_progress`` (bool, False): also call back when a task starts processing.
    ``callback_timeout_seconds`` (float, 5.0): timeout of one callback delivery.

sorahk only
    ``balance`` (int cents, 5000): the account balance; creates deduct their cost, 1012 below it.
    ``normal_price`` / ``pro_price`` (int cents per 10 s, 3 / 30): the price list ``/pricing`` shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS: tuple[str, ...] = ("generate_task", "sorahk", "openai_videos")

KINDS: dict[str, frozenset[str]] = {
    "generate_task": frozenset({"create", "status", "download", "*"}),
    "sorahk": frozenset({"create", "status", "list", "balance", "pricing", "download", "*"}),
    "openai_videos": frozenset({"create", "status", "remix", "content", "images", "chat", "download", "*"}),
}

CALLBACK_MODES: tuple[str, ...] = ("normal", "duplicate", "out_of_order", "late", "never")

DEFAULT_VIDEO_BYTES = 256 * 1024

# Business codes sorahk answers with HTTP 200 (see sorahk.py); ``force`` accepts them there.
SORAHK_BODY_CODES = frozenset({1001, 1012})


@dataclass
class Knobs:
    """The knobs of one protocol (fields of other protocols keep their defaults, unused)."""

    generation_seconds: float = 3.0
    fail_next: int = 0
    fail_next_accepted: bool = False
    force: dict[str, list[int]] = field(default_factory=dict)
    refuse_content: bool = False
    create_hang_seconds: float = 0.0
    video_bytes: int = DEFAULT_VIDEO_BYTES
    download_bytes_per_second: int = 0
    truncate_download_at: int | None = None
    extra_keys: list[str] = field(default_factory=list)
    fetch_images: bool = False
    # generate_task
    rate_limit_per_minute: int = 60
    max_concurrent: int = 10
    callback_mode: str = "normal"
    callback_copies: int = 5
    callback_delay_seconds: float = 2.0
    callback_body_result_url: str | None = None
    status_result_url: str | None = None
    callback_progress: bool = False
    callback_timeout_seconds: float = 5.0
    # sorahk
    balance: int = 5000
    normal_price: int = 3
    pro_price: int = 30


PROTOCOL_ONLY: dict[str, str] = {
    "rate_limit_per_minute": "generate_task",
    "max_concurrent": "generate_task",
    "callback_mode": "generate_task",
    "callback_copies": "generate_task",
    "callback_delay_seconds": "generate_task",
    "callback_body_result_url": "generate_task",
    "status_result_url": "generate_task",
    "callback_progress": "generate_task",
    "callback_timeout_seconds": "generate_task",
    "balance": "sorahk",
    "normal_price": "sorahk",
    "pro_price": "sorahk",
}


def _number(name: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _optional_integer(name: str, value: Any) -> int | None:
    return None if value is None else _integer(name, value)


def _optional_string(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null, got {value!r}")
    return value


def _strings(name: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a list of non-empty strings, got {value!r}")
    return list(value)


def _callback_mode(name: str, value: Any) -> str:
    if value not in CALLBACK_MODES:
        raise ValueError(f"{name} must be one of {', '.join(CALLBACK_MODES)}, got {value!r}")
    return str(value)


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "generation_seconds": _number,
    "fail_next": _integer,
    "fail_next_accepted": _boolean,
    "refuse_content": _boolean,
    "create_hang_seconds": _number,
    "video_bytes": lambda n, v: _integer(n, v, minimum=1),
    "download_bytes_per_second": _integer,
    "truncate_download_at": _optional_integer,
    "extra_keys": _strings,
    "fetch_images": _boolean,
    "rate_limit_per_minute": lambda n, v: _integer(n, v, minimum=1),
    "max_concurrent": lambda n, v: _integer(n, v, minimum=1),
    "callback_mode": _callback_mode,
    "callback_copies": lambda n, v: _integer(n, v, minimum=1),
    "callback_delay_seconds": _number,
    "callback_body_result_url": _optional_string,
    "status_result_url": _optional_string,
    "callback_progress": _boolean,
    "callback_timeout_seconds": lambda n, v: _number(n, v, minimum=0.01),
    "balance": _integer,
    "normal_price": _integer,
    "pro_price": _integer,
}


def _force(protocol: str, value: Any) -> dict[str, list[int]]:
    if not isinstance(value, dict):
        raise ValueError(f"force must be an object of kind -> list of status codes, got {value!r}")
    result: dict[str, list[int]] = {}
    for kind, codes in value.items():
        if kind not in KINDS[protocol]:
            known = ", ".join(sorted(KINDS[protocol]))
            raise ValueError(f"force: unknown kind {kind!r} for {protocol} (kinds: {known})")
        if isinstance(codes, int) and not isinstance(codes, bool):
            codes = [codes]
        if not isinstance(codes, list | tuple):
            raise ValueError(f"force[{kind!r}] must be a list of status codes, got {codes!r}")
        for code in codes:
            body_code = protocol == "sorahk" and code in SORAHK_BODY_CODES
            if isinstance(code, bool) or not isinstance(code, int) or not (400 <= code <= 599 or body_code):
                raise ValueError(f"force[{kind!r}]: {code!r} is not an error status (400-599)")
        result[kind] = list(codes)
    return result


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` if it is one of ``PROTOCOLS``; raise ``ValueError`` otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    return protocol


def validate(protocol: str, updates: dict[str, Any]) -> dict[str, Any]:
    """Check knob updates for one protocol; return them normalised. Raises ``ValueError``."""
    check_protocol(protocol)
    clean: dict[str, Any] = {}
    for name, value in updates.items():
        owner = PROTOCOL_ONLY.get(name)
        if owner is not None and owner != protocol:
            raise ValueError(f"knob {name} belongs to {owner}, not {protocol}")
        if name == "force":
            clean[name] = _force(protocol, value)
        elif name in _VALIDATORS:
            clean[name] = _VALIDATORS[name](name, value)
        else:
            raise ValueError(f"unknown knob {name!r}")
    return clean


def apply(knobs: Knobs, updates: dict[str, Any]) -> None:
    """Set already validated updates (``force`` merges per kind)."""
    for name, value in updates.items():
        if name == "force":
            knobs.force.update({kind: list(codes) for kind, codes in value.items()})
        else:
            setattr(knobs, name, value)


def as_dict(knobs: Knobs, protocol: str) -> dict[str, Any]:
    """The knobs that apply to ``protocol``, as a JSON-ready copy."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(knobs):
        if PROTOCOL_ONLY.get(f.name, protocol) != protocol:
            continue
        value = getattr(knobs, f.name)
        if isinstance(value, dict):
            value = {kind: list(codes) for kind, codes in value.items()}
        elif isinstance(value, list):
            value = list(value)
        result[f.name] = value
    return result

"""An in-memory provider that honours the real ``Provider`` interface (for service tests)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import SecretStr

from reelay.errors import RequestInvalid
from reelay.models import VideoRequest
from reelay.providers.base import (
    CallbackHint,
    Capabilities,
    CreateResult,
    Provider,
    ProviderConfig,
    ProviderState,
    ProviderStatus,
    ResultRef,
)


def config(name: str = "fake", protocol: str = "fake", **kw: object) -> ProviderConfig:
    return ProviderConfig(
        name=name, protocol=protocol, base_url="https://fake.example", api_key=SecretStr("k-secret"), **kw
    )


class FakeProvider(Provider):
    """Records every call; ``create_error``/``status_error`` raise on demand."""

    protocol = "fake"

    def __init__(self, cfg: ProviderConfig | None = None, *, callbacks: bool = True) -> None:
        super().__init__(cfg or config())
        self.supports_callbacks = callbacks
        self.creates: list[tuple[str, str | None]] = []
        self.status_calls: list[str] = []
        self.create_error: Exception | None = None
        self.preflight_error: Exception | None = None
        self.status_error: Exception | None = None
        self.found: str | None = None
        self.find_calls: list[datetime] = []
        self.on_create: Callable[[str], None] | None = None
        self.on_status: Callable[[str], None] | None = None
        self.state = ProviderStatus(provider_task_id="p-1", state=ProviderState.PENDING, progress=0)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            protocol="fake",
            callbacks=self.supports_callbacks,
            modes=["text-to-video"],
            durations=[4, 8],
            default_duration=4,
        )

    def validate(self, request: VideoRequest) -> None:
        if request.duration not in (None, 4, 8):
            raise RequestInvalid("duration must be 4 or 8 for fake", field="duration")

    def preflight(self, request: VideoRequest) -> None:
        if self.preflight_error:
            raise self.preflight_error

    def create(self, request: VideoRequest, *, task_id: str, callback_url: str | None) -> CreateResult:
        self.creates.append((task_id, callback_url))
        if self.on_create:
            self.on_create(task_id)
        if self.create_error:
            raise self.create_error
        return CreateResult(provider_task_id=f"p-{len(self.creates)}", cost_cents=12)

    def status(self, provider_task_id: str) -> ProviderStatus:
        self.status_calls.append(provider_task_id)
        if self.on_status:
            self.on_status(provider_task_id)
        if self.status_error:
            raise self.status_error
        return self.state.model_copy(update={"provider_task_id": provider_task_id})

    def parse_callback(self, body: bytes) -> CallbackHint:
        import json

        try:
            data = json.loads(body)
            return CallbackHint(provider_task_id=data.get("taskId"), claimed_state=data.get("state"))
        except ValueError:
            return CallbackHint()

    def find_created(self, task_id: str, request: VideoRequest, *, since: datetime) -> list[str]:
        self.find_calls.append(since)
        return [self.found] if self.found else []

    def succeed(self, *urls: str) -> None:
        self.state = ProviderStatus(
            provider_task_id="p-1",
            state=ProviderState.SUCCEEDED,
            progress=100,
            results=[ResultRef(url=u) for u in urls],
        )

    def running(self, progress: int) -> None:
        self.state = ProviderStatus(provider_task_id="p-1", state=ProviderState.RUNNING, progress=progress)

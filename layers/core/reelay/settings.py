"""Configuration, validated once at cold start.

Handlers build ``Settings`` from their environment (``Settings.from_environ(os.environ)``);
no code below the handler reads ``os.environ``. Provider credentials come from
``REELAY_<NAME>_API_KEY`` (local runs) or from the JSON secret named by
``REELAY_PROVIDER_KEYS_SECRET_ARN`` (AWS), read through Powertools Parameters with caching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from reelay.errors import ConfigurationError
from reelay.providers.base import ProviderConfig, read_secret

SecretLoader = Callable[[str], str]


class Settings(BaseModel):
    """The environment of a reelay function. Fields a function does not use may be absent."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    task_table_name: str = Field(min_length=1)
    results_bucket: str = Field(min_length=1)
    ingest_queue_url: str = Field(min_length=1)
    submit_queue_url: str | None = None
    poll_state_machine_arn: str | None = None
    poll_queue_url: str | None = None
    callback_base_url: str | None = None
    callback_secret: SecretStr | None = None
    callback_secret_arn: str | None = None
    reelay_providers: str = "generate_task,sorahk,openai_videos"
    reelay_provider_keys_secret_arn: str | None = None
    reelay_allowed_result_hosts: str = ""
    presign_ttl_seconds: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    # Ingest (REELAY_INGEST_*). Defaults fit the ingest function: 900 s timeout, memory from
    # the benchmark ((parts in flight + 1) x part size of buffers, plus the interpreter).
    ingest_part_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=512 * 1024 * 1024,
        validation_alias=AliasChoices("reelay_ingest_part_bytes", "ingest_part_bytes"),
    )
    ingest_parts_in_flight: int = Field(default=4, ge=1, le=32, validation_alias="reelay_ingest_parts_in_flight")
    ingest_max_bytes: int = Field(default=8 * 1024**3, ge=1, validation_alias="reelay_ingest_max_bytes")
    # Per output and attempt; shorter than the function's 900 s so the attempt can record and clean up.
    ingest_deadline_seconds: float = Field(
        default=780.0, gt=0, le=880, validation_alias="reelay_ingest_deadline_seconds"
    )
    ingest_min_bytes_per_second: int = Field(
        default=64 * 1024, ge=0, validation_alias="reelay_ingest_min_bytes_per_second"
    )
    # The whole ingest of a task, from entering ``ingesting`` (separate from the provider's deadline).
    ingest_task_deadline_seconds: float = Field(
        default=3600.0, gt=0, validation_alias="reelay_ingest_task_deadline_seconds"
    )
    # How long a result must stay 403/404/410 (over three attempts) before it counts as expired.
    ingest_gone_confirm_seconds: float = Field(
        default=60.0, ge=0, validation_alias="reelay_ingest_gone_confirm_seconds"
    )
    # First backoff between ingest attempts (doubling, with jitter, capped at 300 s).
    ingest_retry_base_seconds: float = Field(default=10.0, gt=0, validation_alias="reelay_ingest_retry_base_seconds")
    # An ingesting task with no write for this long gets its ingest sent again by reconcile
    # (longer than the ingest function's 900 s timeout, so a running copy is not doubled).
    reelay_ingest_stall_seconds: float = Field(default=1200, ge=1)
    uploads_ttl_seconds: int = Field(default=900, ge=60, le=3600, validation_alias="reelay_uploads_ttl_seconds")
    # Notify (reelay.notify, reelay.webhooks): the queue terminal tasks are told through, the bus.
    notify_queue_url: str | None = None
    event_bus_name: str | None = None
    # host:port webhook receivers allowed over plain http and on any address (local receivers).
    reelay_allowed_webhook_hosts: str = ""
    # Waits between webhook attempts, after the first, comma-separated; empty: the default schedule.
    reelay_webhook_retry_seconds: str = Field(default="", pattern=r"^\s*([0-9]+(\.[0-9]+)?\s*(,\s*|$))*$")
    # How long the previous webhook secret stays valid after a rotation.
    reelay_webhook_secret_overlap_seconds: int = Field(default=86400, ge=0, le=30 * 86400)
    # Batches: the queue of manifest events and chunks (its terminal hook queues reports), and
    # how many lines / bytes one chunk invocation takes (measured: benchmarks/batch_manifest.py).
    batch_queue_url: str | None = None
    batch_chunk_lines: int = Field(default=100, ge=1, le=10000, validation_alias="reelay_batch_chunk_lines")
    # A running batch is recounted from its records this long after its split, and again until it ends.
    batch_check_seconds: int = Field(default=300, ge=1, le=900, validation_alias="reelay_batch_check_seconds")
    batch_chunk_bytes: int = Field(
        default=4 * 1024 * 1024, ge=256 * 1024, le=64 * 1024 * 1024, validation_alias="reelay_batch_chunk_bytes"
    )
    # API keys (ClientAuth=APIKEY): the table of key hashes; the OpenAI routes' model map (JSON,
    # model name -> provider names, see reelay.models_map).
    api_key_table_name: str | None = None
    reelay_openai_models: str = ""
    providers: tuple[ProviderConfig, ...] = ()
    environ: Mapping[str, str] = Field(default_factory=dict, exclude=True, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Validate ``environ`` into settings; raise ``ConfigurationError`` naming what is wrong."""
        values: dict[str, Any] = {k.lower(): v for k, v in environ.items() if v != ""}
        try:
            base = cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"invalid function configuration: {problems}") from None
        configs = _provider_configs(base, environ)
        return base.model_copy(update={"providers": configs, "environ": dict(environ)})

    @property
    def allowed_webhook_hosts(self) -> frozenset[str]:
        from reelay.webhooks import parse_hosts

        return parse_hosts(self.reelay_allowed_webhook_hosts)

    @property
    def allowed_result_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.reelay_allowed_result_hosts.split(",") if h.strip())

    def callback_key(self, secret_loader: SecretLoader | None = None) -> bytes:
        """The HMAC key of callback tokens (local: CALLBACK_SECRET; AWS: CALLBACK_SECRET_ARN)."""
        if self.callback_secret is not None:
            return self.callback_secret.get_secret_value().encode()
        if self.callback_secret_arn:
            return (secret_loader or read_secret)(self.callback_secret_arn).encode()
        raise ConfigurationError("no callback secret: set CALLBACK_SECRET or CALLBACK_SECRET_ARN")

    @property
    def submit_record_seconds(self) -> float:
        """The most one submit record can take: three provider calls (balance, create, a lookup),
        each after at most one wait for the governor's request log."""
        from reelay.governor import CREATE_PATIENCE_SECONDS, READ_WAIT_SECONDS

        longest = max((p.call_seconds for p in self.providers), default=0.0)
        return 2 * (longest + READ_WAIT_SECONDS) + (longest + CREATE_PATIENCE_SECONDS) + 10

    @property
    def poll_record_seconds(self) -> float:
        """The most one poll message can take: one status call and a few writes and sends."""
        longest = max((p.call_seconds for p in self.providers), default=0.0)
        return longest + 5

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


def _provider_configs(base: Settings, environ: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    from reelay.providers.registry import PROTOCOL_DEFAULTS

    names = [n.strip() for n in base.reelay_providers.split(",") if n.strip()]
    configs = []
    for name in names:
        if name == "auto":
            raise ConfigurationError("`auto` is not a provider name: requests use it to ask for routing")
        prefix = f"REELAY_{name.upper()}_"
        url = environ.get(prefix + "BASE_URL", "").strip()
        if not url:
            continue  # listed but not configured in this stack: not offered
        protocol = environ.get(prefix + "PROTOCOL", name).strip()
        if protocol not in PROTOCOL_DEFAULTS:
            raise ConfigurationError(f"provider {name}: unknown protocol {protocol!r} (set {prefix}PROTOCOL)")
        key = environ.get(prefix + "API_KEY", "")
        # Without a key of its own, the key is read from the keys secret on first use (lazily).
        secret_arn = base.reelay_provider_keys_secret_arn if not key else None
        fields: dict[str, Any] = dict(PROTOCOL_DEFAULTS[protocol])
        for env_name, field in (
            ("AUTH_HEADER", "auth_header"),
            ("AUTH_PREFIX", "auth_prefix"),
            ("TIMEOUT_SECONDS", "timeout_seconds"),
            ("TYPICAL_SECONDS", "typical_seconds"),
            ("DEADLINE_SECONDS", "deadline_seconds"),
            ("MAX_IN_FLIGHT", "max_in_flight"),
            ("REQUESTS_PER_MINUTE", "requests_per_minute"),
            ("CAPACITY_WAIT_SECONDS", "capacity_wait_seconds"),
        ):
            if prefix + env_name in environ:
                fields[field] = environ[prefix + env_name]
        priority = environ.get(prefix + "PRIORITY", "").strip()
        if priority:  # routing order for `auto`; the template passes "" for an unset one
            fields["priority"] = priority
        try:
            configs.append(
                ProviderConfig(
                    name=name,
                    protocol=protocol,
                    base_url=url.rstrip("/"),
                    api_key=SecretStr(key),
                    api_key_secret_arn=secret_arn or None,
                    **fields,
                )
            )
        except ValidationError as exc:
            raise ConfigurationError(f"provider {name}: invalid configuration: {exc.errors()[0]['msg']}") from None
    return tuple(configs)

"""A small typed client of the reelay HTTP API.

It is the CLI's one seam to the network and the one place that decides how requests are
authenticated:

- ``token`` (``--token`` / ``REELAY_TOKEN``) sends ``Authorization: Bearer <token>`` to any URL,
  loopback included (a ``reelay dev --client-auth jwt`` stack wants one);
- otherwise a loopback URL (``reelay dev``) gets no credentials;
- any other URL is signed with SigV4 for ``execute-api`` using botocore's credential chain,
  unless signing is turned off (``sign=False``).

Every failure leaves this module as a :class:`CliError` (documented below) carrying a message
for a human and the process exit code, so commands never show a traceback:

- :class:`ApiError` — the API answered 4xx/5xx; holds its ``{"error": {code, message, details}}``.
- :class:`ApiUnreachable` — no answer at all (connection refused, DNS, timeout); exit code 2.
- :class:`DownloadError` — an output could not be fetched or failed its SHA-256 check.

Tests pass an ``httpx.MockTransport`` as ``transport``; nothing else changes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session as BotocoreSession
from pydantic import BaseModel, ValidationError

from reelay.apikeys import ApiKeyList, ApiKeyView, NewApiKey
from reelay.contract import BatchTicket, BatchView, OutputView, ProviderList, ProviderView, TaskPage, TaskView
from reelay_cli.backoff import ProgressPacer, poll_delays


def _version() -> str:
    """This CLI's version, from the installed package's metadata."""
    try:
        return version("reelay")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


CLI_VERSION = _version()
DEFAULT_PORT = 8787
"""The port ``reelay dev`` serves the API on unless told otherwise (``reelay dev --port``)."""
DEFAULT_API_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
"""The API the commands talk to by default: a ``reelay dev`` on this machine."""

USER_AGENT = f"reelay-cli/{CLI_VERSION}"
TERMINAL_STATUSES = frozenset({"succeeded", "failed"})
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
_CHUNK = 1024 * 1024
LOCAL_KEYS_PATH = "/_reelay/keys"
"""Where a ``reelay dev`` stack administers its API keys (see ``reelay_local.local_keys``)."""
LOCAL_TOKEN_PATH = "/_reelay/token"
"""Where a ``reelay dev --client-auth jwt`` stack issues local JWTs (see ``reelay_local.local_jwt``)."""
M = TypeVar("M", bound=BaseModel)


# --- errors -----------------------------------------------------------------------------------


class CliError(Exception):
    """A failure to report to the user as one clear message (no traceback) and an exit code."""

    def __init__(self, message: str, *, exit_code: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class ApiError(CliError):
    """The API answered with an error status; ``code``/``details`` are the server's own."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, exit_code=1, hint=hint)
        self.status = status
        self.code = code
        self.details = details or []


class ApiUnreachable(CliError):
    """No HTTP answer from the API at all."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, exit_code=2, hint=hint)


class DownloadError(CliError):
    """An output could not be downloaded, or its bytes do not match the recorded SHA-256."""


# --- wire shapes ------------------------------------------------------------------------------
# The API's answers are the contract models of ``reelay.contract``: one definition for the API,
# the CLI, the web page's proxy and the tests. Unknown fields are ignored (pydantic's default),
# so a newer API that adds fields still parses.


class Created(NamedTuple):
    """The answer to a create call; ``replayed`` when an Idempotency-Key matched an earlier task."""

    task: TaskView
    replayed: bool


class DownloadProgress(Protocol):
    """Told about a download as it goes (the CLI draws a progress bar from it)."""

    def start(self, name: str, total_bytes: int) -> None: ...

    def advance(self, done_bytes: int) -> None: ...


@dataclass(frozen=True)
class DownloadedFile:
    """An output written to disk after its SHA-256 matched."""

    path: Path
    bytes: int
    sha256: str
    s3_uri: str


# --- authentication ---------------------------------------------------------------------------


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (a ``reelay dev`` stack), which needs no credentials."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def region_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The AWS region to sign for: from an ``<id>.execute-api.<region>.amazonaws.com`` host, else
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else the botocore profile's region."""
    env = os.environ if environ is None else environ
    match = _EXECUTE_API_HOST.match(urlsplit(url).hostname or "")
    if match:
        return match.group(1)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        return region
    configured = BotocoreSession().get_config_variable("region")
    return str(configured) if configured else None


class SigV4(httpx.Auth):
    """Signs each request for API Gateway's IAM authorizer (service ``execute-api``).

    Only ``host`` and ``content-type`` are signed: hop-by-hop headers such as ``connection`` may
    be rewritten on the way and would break the signature.
    """

    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str, service: str = "execute-api") -> None:
        self._credentials = credentials
        self._region = region
        self._service = service

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = {"host": request.headers["host"]}
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        aws_request = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
        # Refreshable credentials (SSO, assumed roles) are frozen once per request.
        SigV4Auth(self._credentials.get_frozen_credentials(), self._service, self._region).add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            value = aws_request.headers.get(name)
            if value:
                request.headers[name] = value
        yield request


TokenSource = str | Callable[[], str]
"""A bearer token, or a function that returns a fresh one for each request."""


class BearerToken(httpx.Auth):
    """``Authorization: Bearer <token>`` for a JWT authorizer (a callable is asked per request)."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        value = self._token() if callable(self._token) else self._token
        request.headers["Authorization"] = f"Bearer {value}"
        yield request


def choose_auth(
    api_url: str, *, token: TokenSource | None = None, sign: bool = True, credentials: Credentials | None = None
) -> httpx.Auth | None:
    """How to authenticate to ``api_url``: bearer token, SigV4, or nothing (loopback / ``sign=False``)."""
    if token:
        return BearerToken(token)
    if not sign or is_loopback(api_url):
        return None
    region = region_for(api_url)
    if not region:
        raise CliError(
            f"cannot tell which AWS region to sign requests to {api_url} for",
            hint="set AWS_REGION, or pass --no-sign if the API has no IAM authorizer",
        )
    creds = credentials or BotocoreSession().get_credentials()
    if creds is None:
        raise CliError(
            f"no AWS credentials found to sign requests to {api_url}",
            hint="configure AWS credentials (AWS_PROFILE, aws sso login, ...), pass --token, or --no-sign",
        )
    return SigV4(creds, region)


# --- the client -------------------------------------------------------------------------------


class ReelayClient:
    """The reelay HTTP API, as Python calls returning its contract models.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``sleep`` is the pause
    between polls of :meth:`wait`, whose delays come from :class:`~reelay_cli.backoff.ProgressPacer`.
    """

    def __init__(
        self,
        api_url: str,
        *,
        token: TokenSource | None = None,
        sign: bool = True,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(
                f"{api_url!r} is not an http(s) URL", exit_code=2, hint="e.g. --api-url http://127.0.0.1:8787"
            )
        self.api_url = api_url.rstrip("/")
        self._sleep = sleep
        self._timeout = timeout
        self._transport = transport
        self._http = httpx.Client(
            base_url=self.api_url,
            auth=choose_auth(self.api_url, token=token, sign=sign, credentials=credentials),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ReelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # tasks

    def create_task(self, request: Mapping[str, Any], *, idempotency_key: str | None = None) -> Created:
        """``POST /v1/tasks``: request a video."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._send("POST", "/v1/tasks", json=_without_none(request), headers=headers)
        replayed = response.headers.get("idempotent-replayed", "false").lower() == "true"
        return Created(_parse(TaskView, response), replayed)

    def get_task(self, task_id: str) -> TaskView:
        """``GET /v1/tasks/{id}``."""
        return _parse(TaskView, self._send("GET", f"/v1/tasks/{_segment(task_id)}"))

    def list_tasks(
        self,
        *,
        status: str | None = None,
        provider: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of ``GET /v1/tasks``, newest first."""
        params = _without_none({"status": status, "provider": provider, "limit": limit, "cursor": cursor})
        return _parse(TaskPage, self._send("GET", "/v1/tasks", params=params))

    def iter_tasks(
        self, *, status: str | None = None, provider: str | None = None, limit: int | None = None
    ) -> Iterator[TaskView]:
        """Every task matching the filters, following ``next_cursor`` page after page."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.list_tasks(status=status, provider=provider, limit=limit, cursor=cursor)
            yield from page.tasks
            cursor = page.next_cursor
            if not cursor or cursor in seen:  # a repeated cursor would loop forever
                return
            seen.add(cursor)

    def remix(self, task_id: str, prompt: str) -> TaskView:
        """``POST /v1/tasks/{id}/remix``: a new task derived from a finished video."""
        return _parse(TaskView, self._send("POST", f"/v1/tasks/{_segment(task_id)}/remix", json={"prompt": prompt}))

    def create_images(self, request: Mapping[str, Any]) -> TaskView:
        """``POST /v1/images``."""
        return _parse(TaskView, self._send("POST", "/v1/images", json=_without_none(request)))

    def providers(self) -> list[ProviderView]:
        """``GET /v1/providers``: the configured providers, their capabilities and accounts."""
        return _parse(ProviderList, self._send("GET", "/v1/providers")).providers

    # API keys of a local `reelay dev` (a deployed stack's are written to its table: reelay_cli.keys)

    def create_key(self, owner: str, name: str | None = None) -> NewApiKey:
        """``POST /_reelay/keys``: a new key for ``owner``; the answer is the only time it is shown."""
        body = _without_none({"owner": owner, "name": name})
        return _parse(NewApiKey, self._send("POST", LOCAL_KEYS_PATH, json=body))

    def list_keys(self, *, owner: str | None = None) -> list[ApiKeyView]:
        """``GET /_reelay/keys``: every key (or ``owner``'s), newest first, without secrets."""
        params = _without_none({"owner": owner})
        return _parse(ApiKeyList, self._send("GET", LOCAL_KEYS_PATH, params=params)).keys

    def revoke_key(self, key_id: str) -> ApiKeyView:
        """``DELETE /_reelay/keys/{key_id}``."""
        return _parse(ApiKeyView, self._send("DELETE", f"{LOCAL_KEYS_PATH}/{_segment(key_id)}"))

    def local_token(self, subject: str, *, ttl_seconds: int | None = None) -> str:
        """A JWT for ``subject`` from a ``reelay dev --client-auth jwt`` stack's local issuer.

        The issuer answers ``POST /_reelay/token`` on the API's own port (loopback only); any
        other API has no such route, which is reported as such.
        """
        body = _without_none({"sub": subject, "ttl_seconds": ttl_seconds})
        try:
            response = self._send("POST", LOCAL_TOKEN_PATH, json=body)
        except ApiError as exc:
            if exc.status in (403, 404):
                raise CliError(
                    f"{self.api_url} has no local JWT issuer",
                    hint="start the stack with `reelay dev --client-auth jwt`, and point --api-url at it",
                ) from exc
            raise
        token = response.json().get("token")
        if not isinstance(token, str) or not token:
            raise CliError(f"{self.api_url} answered {LOCAL_TOKEN_PATH} without a token")
        return token

    def wait(
        self,
        task_id: str,
        *,
        interval: float = 1.0,
        max_interval: float = 10.0,
        timeout: float | None = None,
        on_update: Callable[[TaskView], None] | None = None,
    ) -> TaskView:
        """Poll a task until it is succeeded or failed; ``on_update`` sees every answer.

        The first look is immediate; then the pause grows from ``interval`` to ``max_interval``
        with jitter (:func:`~reelay_cli.backoff.poll_delays`), so a long task is not asked every
        second, and stretches further while the task's progress says its end is far
        (:class:`~reelay_cli.backoff.ProgressPacer`). Raises :class:`CliError` (exit code 3)
        when ``timeout`` seconds pass first.
        """
        started = time.monotonic()
        pacer = ProgressPacer(first=interval, cap=max_interval)
        while True:
            task = self.get_task(task_id)
            if on_update:
                on_update(task)
            if task.status in TERMINAL_STATUSES:
                return task
            if timeout is not None and time.monotonic() - started >= timeout:
                raise CliError(f"task {task_id} is still {task.status} after {timeout:g} s", exit_code=3)
            self._sleep(pacer.pause(task.progress))

    # batches

    def create_batch(self, name: str, *, size: int, md5: str) -> BatchTicket:
        """``POST /v1/batches``: a presigned PUT of a manifest into the caller's inbox."""
        return _parse(BatchTicket, self._send("POST", "/v1/batches", json={"name": name, "bytes": size, "md5": md5}))

    def upload_manifest(self, ticket: BatchTicket, path: Path) -> None:
        """PUT the file to the ticket's presigned URL (it carries its own authorization: no reelay credential)."""
        timeout = httpx.Timeout(self._timeout, connect=10.0)
        with httpx.Client(transport=self._transport, timeout=timeout) as plain, path.open("rb") as body:
            try:
                response = plain.put(ticket.url, content=body, headers={**ticket.headers, "User-Agent": USER_AGENT})
            except httpx.TransportError as exc:
                raise ApiUnreachable(f"cannot upload {path.name} to the results bucket: {exc}") from exc
        if response.is_error:
            # The body is S3's XML error; its code says enough (no URL, it holds a signature).
            code = re.search(r"<Code>([^<]+)</Code>", response.text)
            raise CliError(f"the upload of {path.name} was refused: HTTP {response.status_code} "
                           f"{code.group(1) if code else ''}".rstrip())  # fmt: skip

    def get_batch(self, batch_id: str) -> BatchView:
        """``GET /v1/batches/{id}``."""
        return _parse(BatchView, self._send("GET", f"/v1/batches/{_segment(batch_id)}"))

    def wait_batch(
        self,
        batch_id: str,
        *,
        interval: float = 1.0,
        max_interval: float = 5.0,
        timeout: float | None = None,
        arrival_seconds: float = 120.0,
        on_update: Callable[[BatchView], None] | None = None,
    ) -> BatchView:
        """Poll a batch until it is completed; a 404 is waited out for ``arrival_seconds`` (the
        manifest's event is on its way), then reported. ``timeout`` as for :meth:`wait` (exit 3)."""
        started = time.monotonic()
        delays = poll_delays(first=interval, cap=max_interval)
        while True:
            try:
                batch: BatchView | None = self.get_batch(batch_id)
            except ApiError as exc:
                if exc.status != 404 or time.monotonic() - started >= arrival_seconds:
                    raise
                batch = None
            if batch is not None:
                if on_update:
                    on_update(batch)
                if batch.status == "completed":
                    return batch
            if timeout is not None and time.monotonic() - started >= timeout:
                state = batch.status if batch else "not arrived"
                raise CliError(f"batch {batch_id} is still {state} after {timeout:g} s", exit_code=3)
            self._sleep(next(delays))

    # outputs

    def download(
        self, task: TaskView, out_dir: Path, *, progress: DownloadProgress | None = None
    ) -> list[DownloadedFile]:
        """Download every output of ``task`` into ``out_dir`` through its presigned URL.

        Streams to a ``.part`` file while hashing; the file takes its final name only when its
        SHA-256 (and size) match what reelay recorded, so a bad download never looks finished.
        The presigned URL carries its own authorization: no reelay credential is sent with it.
        ``progress`` is told each file's name and size, then every chunk written.
        """
        outputs = task.outputs
        if not outputs:
            raise CliError(f"task {task.id} is {task.status} and has no outputs to download")
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        with httpx.Client(
            transport=self._transport,
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0)),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
        ) as plain:
            for index, output in enumerate(outputs):
                suffix = PurePosixPath(urlsplit(output.s3_uri).path).suffix
                name = f"{task.id}{suffix}" if len(outputs) == 1 else f"{task.id}-{index}{suffix}"
                files.append(_fetch_verified(plain, output, out_dir / name, progress))
        return files

    # the web page's proxy

    def forward(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, content: bytes | None = None
    ) -> httpx.Response:
        """Send one request as the web page asked it, authenticated as every command is.

        Only ``/v1/...`` paths are forwarded (the page has no business elsewhere); the answer is
        returned as it came, errors included, for the page to show.
        """
        if not path.startswith("/v1/") or ".." in path.split("/"):
            raise CliError(f"refusing to forward {path!r}: only /v1/ paths", exit_code=2)
        headers = {"Content-Type": "application/json"} if content else {}
        try:
            return self._http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot talk to reelay API at {self.api_url}: {exc}") from exc

    # plumbing

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiUnreachable(f"reelay API at {self.api_url} did not answer in time ({exc})") from exc
        except httpx.ConnectError as exc:
            raise ApiUnreachable(
                f"cannot reach reelay API at {self.api_url} — is `reelay dev` running?",
                hint="set --api-url or REELAY_API_URL to talk to another stack",
            ) from exc
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot talk to reelay API at {self.api_url}: {exc}") from exc
        if response.is_error:
            raise _api_error(response)
        return response


def _parse(model: type[M], response: httpx.Response) -> M:
    """The answer as its contract model; an answer that is not one is a clear error, not a traceback."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise CliError(
            f"{response.request.method} {response.request.url.path} answered something that is not a "
            f"{model.__name__}: {exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
            hint="is --api-url a reelay API of a compatible version?",
        ) from exc


def _fetch_verified(
    http: httpx.Client, output: OutputView, target: Path, progress: DownloadProgress | None
) -> DownloadedFile:
    if not output.url:
        raise DownloadError(f"{output.s3_uri} has no download URL in the API's answer")
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    size = 0
    # An error message names the object, not its presigned URL: messages end up in CI logs.
    try:
        with http.stream("GET", output.url) as response:
            if response.status_code != 200:
                raise DownloadError(f"download of {output.s3_uri} answered HTTP {response.status_code}")
            if progress:
                progress.start(target.name, output.bytes)
            with partial.open("wb") as sink:
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
                    if progress:
                        progress.advance(len(chunk))
    except httpx.TransportError as exc:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"download of {output.s3_uri} failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if actual != output.sha256 or size != output.bytes:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"refusing {output.s3_uri}: got {size} bytes with sha256 {actual}, "
            f"reelay recorded {output.bytes} bytes with sha256 {output.sha256}"
        )
    partial.replace(target)
    return DownloadedFile(path=target, bytes=size, sha256=actual, s3_uri=output.s3_uri)


def _api_error(response: httpx.Response) -> ApiError:
    """The server's ``{"error": {...}}``, or the best reading of a foreign error body
    (API Gateway's own ``{"message": "Forbidden"}``, a proxy's HTML page)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or f"HTTP_{status}")
        message = str(error.get("message") or response.reason_phrase)
        details = error.get("details")
        details = [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []
    else:
        code = f"HTTP_{status}"
        if isinstance(body, dict) and body.get("message"):
            message = str(body["message"])
        else:
            message = response.text.strip()[:200] or response.reason_phrase or "error"
        details = []
    hint = None
    if status == 401:
        hint = "the API wants credentials: pass --token (JWT) or use AWS credentials that can invoke it"
    elif status == 403:
        hint = "the caller is not allowed: check the AWS credentials / token in use"
    return ApiError(status, code, message, details, hint=hint)


def _segment(value: str) -> str:
    """A path segment, quoted so an id can never change the route."""
    return quote(value, safe="")


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}

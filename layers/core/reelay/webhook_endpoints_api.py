"""OpenAI's webhook endpoint routes (``client.webhooks``): the HTTP mapping of ``reelay.webhook_endpoints``.

OpenAI's objects in, OpenAI's objects and error shape out (``reelay.openai_api.openai_errors``);
every rule is the service's. Only the API function imports this module (the notifier and the
store need the endpoints, not their routes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, ConfigDict, Field

from reelay.errors import RequestInvalid
from reelay.webhook_endpoints import EVENT_TYPES_PATH, PREFIX, WebhookEndpoint, WebhookEndpoints
from reelay.webhooks import SUPPORTED_EVENT_TYPES

# ----------------------------------------------------------------- OpenAI's objects


class _OpenAIObject(BaseModel):
    """Base of OpenAI's objects: built on the first answer that needs one (``defer_build``)."""

    model_config = ConfigDict(defer_build=True)


class WebhookEndpointObject(_OpenAIObject):
    """OpenAI's ``WebhookEndpoint``."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    updated_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret_hint: str


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """OpenAI's ``WebhookEndpointWithSecret``: the answer of create and rotate only."""

    signing_secret: str


class WebhookEndpointList(_OpenAIObject):
    object: Literal["list"] = "list"
    data: list[WebhookEndpointObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class WebhookEndpointDeleted(_OpenAIObject):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookEndpointTestResult(_OpenAIObject):
    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    event_type: str
    status_code: int
    success: Literal[True] = True
    webhook_endpoint_id: str


class WebhookEventTypeList(_OpenAIObject):
    object: Literal["list"] = "list"
    data: list[str] = Field(default_factory=lambda: list(SUPPORTED_EVENT_TYPES))


def secret_hint(secret: str) -> str:
    """A masked hint of a secret: its prefix and last four characters."""
    return f"whsec_****{secret[-4:]}"


def endpoint_object(endpoint: WebhookEndpoint) -> WebhookEndpointObject:
    return WebhookEndpointObject(
        id=endpoint.id,
        created_at=int(endpoint.created_at.timestamp()),
        updated_at=int(endpoint.updated_at.timestamp()),
        event_types=list(endpoint.event_types),
        name=endpoint.name,
        url=endpoint.url,
        signing_secret_hint=secret_hint(endpoint.secrets[0].secret),
    )


def with_secret(endpoint: WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(
        **endpoint_object(endpoint).model_dump(exclude={"object"}), signing_secret=endpoint.secrets[0].secret
    )


# ----------------------------------------------------------------- the routes


def _fields(body: Mapping[str, Any], allowed: dict[str, type | tuple[type, ...]], required: Sequence[str] = ()) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RequestInvalid(f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64])
    for name in required:
        if body.get(name) is None:
            raise RequestInvalid(f"{name} is required", field=name)
    for name, kind in allowed.items():
        value = body.get(name)
        if value is None:
            continue
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RequestInvalid(f"{name} must be a list of strings", field=name)
        elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise RequestInvalid(f"{name} must be a {getattr(kind, '__name__', 'value')}", field=name)


def webhook_endpoints_router(endpoints: Callable[[], WebhookEndpoints], owner: Callable[[], str]) -> Router:
    """The ``/v1/webhook_endpoints`` routes (and ``/v1/webhook_event_types``), to include into the API resolver."""
    # Here, not at the top: reelay.openai_api imports the store, which imports reelay.webhook_endpoints.
    from reelay.openai_api import json_object, openai_errors

    router = Router()
    guarded: list[Any] = [openai_errors]
    editable: dict[str, type | tuple[type, ...]] = {"name": str, "url": str, "event_types": list}

    def body() -> dict[str, Any]:
        return json_object(router.current_event.raw_event)

    def answer(model: BaseModel) -> Response[str]:
        return Response(200, content_type="application/json", body=model.model_dump_json())

    @router.post(PREFIX, middlewares=guarded, include_in_schema=False)
    def create_webhook_endpoint() -> Response[str]:
        fields = body()
        _fields(fields, editable, required=("name", "url", "event_types"))
        made = endpoints().create(
            owner=owner(), name=fields["name"], url=fields["url"], event_types=fields["event_types"]
        )
        return answer(with_secret(made))

    @router.get(PREFIX, middlewares=guarded, include_in_schema=False)
    def list_webhook_endpoints() -> Response[str]:
        query = router.current_event.query_string_parameters or {}
        limit_text = query.get("limit", "20")
        if not re.fullmatch(r"[0-9]{1,3}", limit_text) or not 1 <= int(limit_text) <= 100:
            raise RequestInvalid("limit must be 1 to 100", field="limit")
        found, more = endpoints().list(owner=owner(), after=query.get("after") or None, limit=int(limit_text))
        page = WebhookEndpointList(
            data=[endpoint_object(e) for e in found],
            first_id=found[0].id if found else None,
            last_id=found[-1].id if found else None,
            has_more=more,
        )
        return answer(page)

    @router.get(f"{PREFIX}/<webhook_endpoint_id>", middlewares=guarded, include_in_schema=False)
    def get_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        return answer(endpoint_object(endpoints().get(webhook_endpoint_id, owner=owner())))

    @router.post(f"{PREFIX}/<webhook_endpoint_id>", middlewares=guarded, include_in_schema=False)
    def update_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        fields = body()
        _fields(fields, editable)
        changed = endpoints().update(
            webhook_endpoint_id, owner=owner(), name=fields.get("name"), url=fields.get("url"),
            event_types=fields.get("event_types"),
        )  # fmt: skip
        return answer(endpoint_object(changed))

    @router.delete(f"{PREFIX}/<webhook_endpoint_id>", middlewares=guarded, include_in_schema=False)
    def delete_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        endpoints().delete(webhook_endpoint_id, owner=owner())
        return answer(WebhookEndpointDeleted(id=webhook_endpoint_id))

    @router.post(f"{PREFIX}/<webhook_endpoint_id>/rotate_secret", middlewares=guarded, include_in_schema=False)
    def rotate_webhook_endpoint_secret(webhook_endpoint_id: str) -> Response[str]:
        fields = body()
        _fields(fields, {"keep_old_secret_active_for_24_hours": bool})
        keep = bool(fields.get("keep_old_secret_active_for_24_hours") or False)
        return answer(with_secret(endpoints().rotate(webhook_endpoint_id, owner=owner(), keep_old=keep)))

    @router.post(f"{PREFIX}/<webhook_endpoint_id>/test", middlewares=guarded, include_in_schema=False)
    def test_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        fields = body()
        _fields(fields, {"event_type": str}, required=("event_type",))
        event_type = fields["event_type"]
        status = endpoints().test(webhook_endpoint_id, owner=owner(), event_type=event_type)
        return answer(
            WebhookEndpointTestResult(
                event_type=event_type, status_code=status, webhook_endpoint_id=webhook_endpoint_id
            )
        )

    @router.get(EVENT_TYPES_PATH, middlewares=guarded, include_in_schema=False)
    def list_webhook_event_types() -> Response[str]:
        return answer(WebhookEventTypeList())

    return router

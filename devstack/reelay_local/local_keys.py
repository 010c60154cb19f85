"""API key administration for ``reelay dev --client-auth apikey``: ``/_reelay/keys`` on the local gateway.

In AWS an admin makes keys by writing the stack's ``ApiKeyTable`` with its own IAM credentials
(``reelay keys … --stack NAME``); there is no API route for it. Locally the table lives in moto,
inside the ``reelay dev`` process, so the gateway offers the same operations (``reelay.apikeys.ApiKeys``
over the local table), on 127.0.0.1 only, as it issues local JWTs (``/_reelay/token``):

- ``POST /_reelay/keys`` ``{"owner", "name"?}`` → 201, the new key (the only time it is shown);
- ``GET /_reelay/keys[?owner=]`` → ``{"keys": [...]}`` without keys or hashes;
- ``DELETE /_reelay/keys/{key_id}`` → the revoked key's record (404 if there is none).
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from werkzeug.wrappers import Request, Response

from reelay.apikeys import ApiKeyList, ApiKeyRequest, ApiKeys
from reelay.errors import ApiKeyNotFound, RequestInvalid

KEYS_PATH = "/_reelay/keys"


def keys_answer(request: Request, keys: ApiKeys) -> Response:
    """The answer to one ``/_reelay/keys`` request (the caller checked it comes from loopback)."""
    rest = request.path.removeprefix(KEYS_PATH)
    try:
        if request.method == "POST" and rest in ("", "/"):
            asked = ApiKeyRequest.model_validate_json(request.get_data(cache=False) or b"{}")
            return _json(201, keys.create(asked).model_dump_json())
        if request.method == "GET" and rest in ("", "/"):
            found = keys.list(owner=request.args.get("owner") or None)
            return _json(200, ApiKeyList(keys=found).model_dump_json())
        if request.method == "DELETE" and rest.startswith("/") and rest.count("/") == 1:
            return _json(200, keys.revoke(rest[1:]).model_dump_json())
    except ValidationError as exc:
        return _json(400, json.dumps({"message": f"Bad Request: {exc.errors()[0]['msg']}"}))
    except RequestInvalid as exc:
        return _json(400, json.dumps({"message": f"Bad Request: {exc.message}"}))
    except ApiKeyNotFound as exc:
        return _json(404, json.dumps({"message": exc.message}))
    return _json(404, json.dumps({"message": "Not Found"}))


def _json(status: int, body: str) -> Response:
    return Response(body, status=status, content_type="application/json")

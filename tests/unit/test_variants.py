"""The request shapes say exactly what each adapter accepts: no more, no less.

Schemathesis (tests/e2e/test_openapi_fuzz.py) samples the document; this test walks the whole
option space of each protocol, so a rule added to an adapter without its shape (or the other
way round) fails here, naming the combination.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from reelay.errors import RequestInvalid
from reelay.models import VideoRequest
from reelay.providers.base import ProviderConfig
from reelay.providers.registry import build_provider
from reelay.variants import openai_video_models, video_body

MISSING = object()


def _config(protocol: str) -> ProviderConfig:
    return ProviderConfig(name=protocol, protocol=protocol, base_url="https://p.example", api_key=SecretStr("k"))


def _models(protocol: str) -> list[Any]:
    if protocol == "openai_videos":
        # One of each group, a non-canonical ordering, and strings the parser refuses.
        picks = [models[-1] for models in openai_video_models().values()]
        return [*picks, "sora_video2-25s-hd", "sora_video2-portrait-landscape", "sora_image", "gpt"]
    return ["sora-2", "sora-2-pro", "sora-2-pro-max"]


def _adapter_accepts(provider: Any, body: dict[str, Any]) -> bool:
    try:
        provider.validate(VideoRequest.model_validate(body))
    except (RequestInvalid, ValidationError):
        return False
    return True


@pytest.mark.parametrize("protocol", ["sorahk", "generate_task", "openai_videos"])
def test_a_body_fits_a_shape_exactly_when_the_adapter_accepts_it(protocol: str) -> None:
    # Given the shapes of one provider and its real adapter
    config = _config(protocol)
    shapes = TypeAdapter(video_body([config]))
    provider = build_provider(config)
    options: dict[str, list[Any]] = {
        "duration": [MISSING, 4, 8, 10, 12, 15, 25],
        "orientation": [MISSING, "portrait", "landscape"],
        "resolution": [MISSING, "720p", "1080p"],
        "model": [MISSING, *_models(protocol)],
        "pro": [MISSING, True, False],
        "watermark": [MISSING, True],
        "image_url": [MISSING, "https://img.example/a.png"],
    }
    names = list(options)
    mismatches = []
    checked = 0
    # When every combination of options is tried both ways
    for values in itertools.product(*options.values()):
        body = {"provider": protocol, "prompt": "a lighthouse"}
        body |= {k: v for k, v in zip(names, values, strict=True) if v is not MISSING}
        try:
            shapes.validate_python(body)
            fits = True
        except ValidationError:
            fits = False
        checked += 1
        if fits != _adapter_accepts(provider, body):
            mismatches.append((fits, body))
    # Then the schema and the adapter agree on every one
    assert checked > 1000
    assert mismatches == [], mismatches[:5]


def test_a_json_string_is_not_a_number_but_an_integral_float_is_an_integer() -> None:
    shapes = TypeAdapter(video_body([_config("generate_task")]))
    assert shapes.validate_python({"provider": "generate_task", "prompt": "x", "duration": 8.0}).duration == 8
    for bad in ({"duration": "8"}, {"pro": 1}, {"duration": True}, {"provider": "nope"}):
        with pytest.raises(ValidationError):
            shapes.validate_python({"provider": "generate_task", "prompt": "x"} | bad)

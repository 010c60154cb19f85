"""Request bodies per configured provider, so the OpenAPI document says exactly what is accepted.

``POST /v1/tasks`` takes one of several *shapes*: for each configured provider, the option
combinations its protocol can do (sorahk: normal, pro by flag, pro by model; generate_task:
text-to-video, image-to-video; openai_videos: composed from fields, 1080p, or one shape per
group of equivalent model strings). Each shape is a strict pydantic model whose fields allow
exactly what the adapter's ``validate`` accepts, so a schema-valid body is never refused and a
refused body is never schema-valid (``tests/unit/test_variants.py`` checks this against the
adapters, combination by combination). The shapes are a union picked by a callable
discriminator (``provider`` and the fields that tell shapes apart), shown as ``oneOf``.

The body is then turned into the provider-neutral ``VideoRequest`` (``ImageRequest``) that the
rest of reelay uses, so nothing below the API knows about shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Field, Tag, create_model

from reelay.models import (
    PREVIEWS_DESCRIPTION,
    ImageSize,
    Metadata,
    Orientation,
    Prompt,
    Resolution,
    S3Key,
    StrictBody,
    WebUrl,
)
from reelay.providers import generate_task, openai_videos, sorahk
from reelay.providers.base import ProviderConfig

# ``None``-typed fields are the ones a shape does not offer: explicit ``null`` (what
# ``VideoRequest`` accepts) or absent.
_NOT_OFFERED = (None, None)


def _literal(values: Iterable[Any]) -> Any:
    return Literal[tuple(values)]


@dataclass(frozen=True)
class _Spec:
    """A shape before it is a model: its class name, provider, description and own options."""

    name: str
    provider: str
    description: str
    options: dict[str, Any]


def _shape(cls_name: str, provider: str, description: str, options: dict[str, Any]) -> tuple[str, _Spec]:
    return cls_name, _Spec(cls_name, provider, description, options)


def _model(spec: _Spec, webhook_url: Any = None, image_url: Any = None) -> type[BaseModel]:
    """The shape's model: the common fields (``webhook_url`` of the stack's type), then its options
    (an offered ``image_url`` of the stack's type, when given).

    Each model is made once, with its final URL types; its validator is built on the route's
    first request (``StrictBody`` defers it).
    """
    options = dict(spec.options)
    if image_url is not None and "image_url" in options:
        annotation, default = options["image_url"]
        if annotation == WebUrl:
            options["image_url"] = (image_url, default)
        elif annotation == (WebUrl | None):
            options["image_url"] = (image_url | None, default)
    fields: dict[str, Any] = {
        "provider": (Literal[spec.provider], Field(description="A configured provider.")),
        "prompt": (Prompt, ...),
        "webhook_url": (
            (webhook_url or WebUrl) | None,
            Field(default=None, description="Notified when the task ends."),
        ),
        "metadata": (Metadata, None),
        "previews": (bool, Field(default=False, description=PREVIEWS_DESCRIPTION)),
        "image_url": _NOT_OFFERED,
        "duration": _NOT_OFFERED,
        "orientation": _NOT_OFFERED,
        "resolution": _NOT_OFFERED,
        "model": _NOT_OFFERED,
        "pro": (Literal[False], False),
        "watermark": _NOT_OFFERED,
        **options,
    }
    return create_model(spec.name, __base__=StrictBody, __doc__=spec.description, **fields)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_") if part)


# ----------------------------------------------------------------- per protocol
# Each returns (tag, model) pairs and a tag function over the raw body (a dict).

Shapes = list[tuple[str, _Spec]]
TagFn = Callable[[dict[str, Any]], str | None]


def _sorahk(name: str) -> tuple[Shapes, TagFn]:
    base = _camel(name)
    durations_normal = _literal(sorahk.NORMAL_DURATIONS)
    durations_pro = _literal(sorahk.PRO_DURATIONS)
    normal_model = next(m for m, pro in sorahk.MODELS.items() if not pro)
    pro_model = next(m for m, pro in sorahk.MODELS.items() if pro)
    common = {
        "image_url": (WebUrl | None, None),
        "orientation": (Orientation | None, None),
        "watermark": (bool | None, None),
    }
    shapes = [
        _shape(
            f"{base}Normal",
            name,
            f"{name} (sorahk), normal model: {', '.join(map(str, sorahk.NORMAL_DURATIONS))} s.",
            common
            | {
                "duration": (durations_normal | None, None),
                "resolution": (Resolution | None, None),
                "model": (Literal[normal_model] | None, None),
                "pro": (Literal[False], False),
            },
        ),
        _shape(
            f"{base}Pro",
            name,
            f"{name} (sorahk), pro by `pro: true`: {', '.join(map(str, sorahk.PRO_DURATIONS))} s, always 1080p.",
            common
            | {
                "duration": (durations_pro | None, None),
                "resolution": (Literal["1080p"] | None, None),
                "pro": (Literal[True], ...),
            },
        ),
        _shape(
            f"{base}ProModel",
            name,
            f"{name} (sorahk), pro by `model: {pro_model}`.",
            common
            | {
                "duration": (durations_pro | None, None),
                "resolution": (Literal["1080p"] | None, None),
                "model": (Literal[pro_model], ...),
                "pro": (bool, False),
            },
        ),
    ]

    def tag(body: dict[str, Any]) -> str | None:
        if body.get("model") == pro_model:
            return f"{base}ProModel"
        if body.get("pro") is True and body.get("model") is None:
            return f"{base}Pro"
        return f"{base}Normal"

    return shapes, tag


def _generate_task(name: str) -> tuple[Shapes, TagFn]:
    base = _camel(name)
    common = {
        "duration": (_literal(generate_task.DURATIONS) | None, None),
        "resolution": (_literal(generate_task.RESOLUTIONS) | None, None),
        "model": (Literal[generate_task.MODEL] | None, None),
        "pro": (bool, False),
    }
    shapes = [
        _shape(
            f"{base}TextToVideo",
            name,
            f"{name} (generate_task), text-to-video: orientation and resolution choose the size.",
            common | {"orientation": (Orientation | None, None)},
        ),
        _shape(
            f"{base}ImageToVideo",
            name,
            f"{name} (generate_task), image-to-video: the image sets the orientation.",
            common | {"image_url": (WebUrl, Field(description="Reference image."))},
        ),
    ]

    def tag(body: dict[str, Any]) -> str | None:
        return f"{base}ImageToVideo" if body.get("image_url") is not None else f"{base}TextToVideo"

    return shapes, tag


@cache
def openai_video_models() -> dict[tuple[str, bool, int, bool], tuple[str, ...]]:
    """Every model string openai_videos accepts, grouped by what it means.

    Derived from the adapter's own parser (every ordering of every suffix set is tried), so
    the schema cannot drift from it. Key: (orientation, hd, duration, pro).
    """
    suffixes = [
        *openai_videos.ORIENTATION_SUFFIXES.values(),
        openai_videos.HD_SUFFIX,
        *openai_videos.DURATION_SUFFIXES.values(),
        openai_videos.PRO_SUFFIX,
    ]
    candidates = [openai_videos.LEGACY_VIDEO_MODEL]
    for size in range(len(suffixes) + 1):
        for combo in itertools.permutations(suffixes, size):
            candidates.append(openai_videos.SEPARATOR.join([openai_videos.VIDEO_MODEL, *combo]))
    groups: dict[tuple[str, bool, int, bool], list[str]] = {}
    for candidate in candidates:
        try:
            parsed = openai_videos.parse_video_model(candidate)
        except Exception:
            continue
        key = (parsed.orientation or openai_videos.DEFAULT_ORIENTATION, parsed.hd, parsed.duration, parsed.pro)
        groups.setdefault(key, []).append(candidate)
    return {key: tuple(models) for key, models in sorted(groups.items())}


def _openai_videos(name: str) -> tuple[Shapes, TagFn]:
    base = _camel(name)
    durations = openai_videos.DURATIONS
    hd_durations = [d for d in durations if d <= openai_videos.HD_MAX_DURATION]
    common = {"watermark": (bool | None, None), "image_url": _NOT_OFFERED}
    shapes = [
        _shape(
            f"{base}Composed",
            name,
            f"{name} (openai_videos): the model is composed from the fields (720p).",
            common
            | {
                "duration": (_literal(durations) | None, None),
                "orientation": (Orientation | None, None),
                "resolution": (Literal["720p"] | None, None),
                "pro": (bool, False),
            },
        ),
        _shape(
            f"{base}ComposedHd",
            name,
            f"{name} (openai_videos): 1080p (the hd suffix), {', '.join(map(str, hd_durations))} s.",
            common
            | {
                "duration": (_literal(hd_durations) | None, None),
                "orientation": (Orientation | None, None),
                "resolution": (Literal["1080p"], ...),
                "pro": (bool, False),
            },
        ),
    ]
    by_model: dict[str, str] = {}
    for (orientation, hd, duration, pro), models in openai_video_models().items():
        cls = f"{base}Model{_camel(orientation)}{'Hd' if hd else ''}{duration}s{'Pro' if pro else ''}"
        shapes.append(
            _shape(
                cls,
                name,
                f"{name} (openai_videos) with an explicit model: {orientation}, {'1080p' if hd else '720p'}, "
                f"{duration} s{', pro' if pro else ''}. Other fields, when given, must agree with the model.",
                common
                | {
                    "model": (_literal(models), ...),
                    "duration": (Literal[duration] | None, None),
                    "orientation": (Literal[orientation] | None, None),
                    "resolution": (Literal["1080p" if hd else "720p"] | None, None),
                    "pro": ((bool, False) if pro else (Literal[False], False)),
                },
            )
        )
        by_model.update(dict.fromkeys(models, cls))

    def tag(body: dict[str, Any]) -> str | None:
        model = body.get("model")
        if model is None:
            hd = body.get("resolution") == "1080p" and body.get("duration") in (None, *hd_durations)
            # 1080p with a longer video: the 720p shape names `resolution` as the field at fault,
            # as the adapter does.
            return f"{base}ComposedHd" if hd else f"{base}Composed"
        return by_model.get(model) if isinstance(model, str) else None

    return shapes, tag


def _generic(name: str) -> tuple[Shapes, TagFn]:
    """A protocol without a shape table: the provider-neutral fields (its adapter validates)."""
    base = _camel(name)
    shapes = [
        _shape(
            f"{base}Request",
            name,
            f"{name}: a video request.",
            {
                "image_url": (WebUrl | None, None),
                "duration": (int | None, Field(default=None, ge=1, le=60)),
                "orientation": (Orientation | None, None),
                "resolution": (Resolution | None, None),
                "model": (str | None, Field(default=None, max_length=128)),
                "pro": (bool, False),
                "watermark": (bool | None, None),
            },
        )
    ]
    return shapes, lambda body: f"{base}Request"


_PROTOCOL_SHAPES: dict[str, Callable[[str], tuple[Shapes, TagFn]]] = {
    sorahk.PROTOCOL: _sorahk,
    generate_task.PROTOCOL: _generate_task,
    openai_videos.PROTOCOL: _openai_videos,
}


def _auto(configs: Sequence[ProviderConfig]) -> tuple[Shapes, TagFn]:
    """``provider: auto``: one shape per cell of needs some configured provider can serve.

    The cells (``reelay.routing.auto_cells``) are disjoint, so a body fits at most one shape,
    and a body fits one exactly when routing finds a capable provider for it.
    """
    from reelay.routing import AUTO, auto_cells

    def options(values: Sequence[Any], *, required_description: str) -> tuple[Any, Any]:
        given = [v for v in values if v is not None]
        if not given:
            return _NOT_OFFERED
        if None in values:
            return (_literal(given) | None, None)
        return (_literal(given), Field(description=required_description))

    shapes: Shapes = []
    tags: dict[tuple[bool, bool, Any, Any], str] = {}
    for cell in auto_cells(configs):
        kind = "ImageToVideo" if cell.image else "TextToVideo"
        pro_only: bool | None = cell.pros[0] if len(cell.pros) == 1 else None
        pro = {False: "", True: "Pro", None: "AnyPro"}[pro_only]
        name = (
            f"Auto{kind}{pro}{''.join(_camel(r or 'unset') for r in cell.resolutions)}"
            f"{''.join(_camel(o or 'unset') for o in cell.orientations)}"
        )
        durations = ", ".join("default" if d is None else f"{d}" for d in cell.durations)
        resolutions = ", ".join(r or "unset" for r in cell.resolutions)
        shapes.append(
            _shape(
                name,
                AUTO,
                f"auto, {kind.lower()}{', pro' if pro_only else ''}, resolution {resolutions}: "
                f"durations {durations} s; routed to a capable provider by priority, free capacity and price.",
                {
                    "image_url": (WebUrl, Field(description="Reference image.")) if cell.image else _NOT_OFFERED,
                    "pro": {False: (Literal[False], False), True: (Literal[True], ...), None: (bool, False)}[pro_only],
                    "resolution": options(cell.resolutions, required_description="720p or 1080p."),
                    "orientation": options(cell.orientations, required_description="portrait or landscape."),
                    "duration": options(cell.durations, required_description="Seconds."),
                },
            )
        )
        for pro_value, resolution, orientation in itertools.product(cell.pros, cell.resolutions, cell.orientations):
            tags[(cell.image, pro_value, resolution, orientation)] = name

    def tag(body: dict[str, Any]) -> str | None:
        resolution, orientation = body.get("resolution"), body.get("orientation")
        if not all(v is None or isinstance(v, str) for v in (resolution, orientation)):
            return None  # no shape offers such a need (and it may not even be hashable)
        return tags.get((body.get("image_url") is not None, body.get("pro") is True, resolution, orientation))

    return shapes, tag


def _unknown_shape_message(names: Sequence[str]) -> str:
    return (
        f"the body fits no request shape: `provider` must be one of {', '.join(names) or 'none'}, "
        "and for openai_videos a `model` must be one of its video models; with `auto`, no configured provider "
        "offers this image input, pro, resolution and orientation together (see /v1/openapi.json)"
    )


def video_body(providers: Sequence[ProviderConfig], *, webhook_url: Any = None, image_url: Any = None) -> Any:
    """The type of ``POST /v1/tasks``'s body: a union of every configured provider's shapes.

    ``webhook_url`` and ``image_url``, when given, are the types of every shape's fields of
    those names (the stack's rules: ``reelay.webhooks.webhook_url_type``, ``image_url_type``).
    """
    shapes: Shapes = []
    tags: dict[str, TagFn] = {}
    for config in providers:
        build = _PROTOCOL_SHAPES.get(config.protocol, _generic)
        provider_shapes, tag = build(config.name)
        shapes += provider_shapes
        tags[config.name] = tag
    names = [c.name for c in providers]
    if providers:
        auto_shapes, tags["auto"] = _auto(providers)
        shapes += auto_shapes
        names.append("auto")

    def pick(body: Any) -> str | None:
        if isinstance(body, BaseModel):
            body = body.model_dump()
        if not isinstance(body, dict):
            return None
        name = body.get("provider")
        tag = tags.get(name) if isinstance(name, str) else None
        return tag(body) if tag else None

    if not shapes:
        return _model(_shape("NoProvider", "none", "No provider is configured.", {})[1])
    members = tuple(Annotated[_model(spec, webhook_url, image_url), Tag(tag)] for tag, spec in shapes)
    return Annotated[
        Union[members],  # noqa: UP007 - a runtime-built union
        Discriminator(pick, custom_error_type="provider_shape", custom_error_message=_unknown_shape_message(names)),
        Field(description="A video request: one shape per provider and option set."),
    ]


def offered_elsewhere(body_type: Any, tag: str, field: str, value: Any) -> str | None:
    """For a value that shape ``tag`` of ``body_type`` (``video_body``'s union) refuses in
    ``field``: the provider's other shapes that offer it, in words, or None.

    A shape is picked by the fields that tell shapes apart, so a value another shape of the same
    provider takes (sorahk's 25 s, which only pro offers) is refused with the picked shape's
    choices; this says where the value is offered. Read on an error only; nothing is built."""
    members = _members(body_type)
    refusing = members.get(tag)
    if refusing is None:
        return None
    if _names_a_model(refusing):
        # The body named a model, which fixes the options: say what it means.
        return (refusing.__doc__ or tag).strip().rstrip(".")
    provider = _literal_values(refusing, "provider")
    offering = [
        (model.__doc__ or other).strip().rstrip(".")
        for other, model in members.items()
        if other != tag
        and _literal_values(model, "provider") == provider
        and not _names_a_model(model)
        and _admits(model, field, value)
    ]
    return f"{value!r} is offered by {' or by '.join(offering)}" if offering else None


def _members(body_type: Any) -> dict[str, type[BaseModel]]:
    """The tagged shapes of a ``video_body`` union, by tag (none for a single model)."""
    if get_origin(body_type) is not Annotated:
        return {}
    members = {}
    for member in get_args(get_args(body_type)[0]):
        if get_origin(member) is Annotated:
            model, *marks = get_args(member)
            members.update({mark.tag: model for mark in marks if isinstance(mark, Tag)})
    return members


def _literal_values(model: type[BaseModel], field: str) -> tuple[Any, ...]:
    """The values a field of Literals (or None) takes; () when it takes anything else too."""
    info = model.model_fields.get(field)
    if info is None:
        return ()
    values: list[Any] = []
    for arg in get_args(info.annotation) if get_origin(info.annotation) is not Literal else (info.annotation,):
        if arg is type(None):
            continue
        if get_origin(arg) is not Literal:
            return ()
        values += get_args(arg)
    return tuple(values)


def _names_a_model(model: type[BaseModel]) -> bool:
    info = model.model_fields.get("model")
    return info is not None and info.is_required()


def _admits(model: type[BaseModel], field: str, value: Any) -> bool:
    return any(type(v) is type(value) and v == value for v in _literal_values(model, field))


def image_body(providers: Sequence[ProviderConfig], *, webhook_url: Any = None, image_url: Any = None) -> Any:
    """The type of ``POST /v1/images``'s body: one shape per provider whose protocol makes images
    (``image_url``, when given, the type of each of ``image_urls``)."""
    shapes = []
    for config in providers:
        if config.protocol != openai_videos.PROTOCOL:
            continue
        fields: dict[str, Any] = {
            "provider": (Literal[config.name], Field(description="A provider that makes images.")),
            "prompt": (Prompt, ...),
            "n": (int, Field(default=1, ge=openai_videos.IMAGE_COUNT_RANGE[0], le=openai_videos.IMAGE_COUNT_RANGE[1])),
            "size": (ImageSize | None, None),
            "model": (Literal[openai_videos.IMAGE_MODEL] | None, None),
            "image_urls": (
                list[image_url or WebUrl],  # type: ignore[misc]
                Field(default_factory=list, max_length=4, description="Images to edit."),
            ),
            "image_keys": (
                list[S3Key],
                Field(default_factory=list, max_length=4, description="Your uploads to edit (POST /v1/uploads)."),
            ),
            "webhook_url": ((webhook_url or WebUrl) | None, None),
            "metadata": (Metadata, None),
        }
        cls = f"{_camel(config.name)}Images"
        shapes.append(create_model(cls, __base__=StrictBody, __doc__=f"Images from {config.name}.", **fields))
    if not shapes:
        return _model(_shape("NoImageProvider", "none", "No provider makes images.", {})[1])
    if len(shapes) == 1:
        return shapes[0]
    return Annotated[Union[tuple(shapes)], Field(discriminator="provider")]  # noqa: UP007


def remix_models(providers: Sequence[ProviderConfig]) -> tuple[str, ...] | None:
    """The model strings a remix may name (openai_videos' video models), or None for free text."""
    if any(c.protocol == openai_videos.PROTOCOL for c in providers):
        return tuple(m for models in openai_video_models().values() for m in models)
    return None

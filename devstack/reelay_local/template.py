"""template.yaml as plain CloudFormation, and its intrinsic functions resolved locally.

The SAM template is translated by ``aws-sam-translator`` (the library ``sam`` itself uses), so the
local stack sees exactly the resources CloudFormation would: event source mappings, rules,
schedules, bucket notifications and HTTP API bodies come out of SAM's own expansion instead of a
reimplementation of it. Local paths (``CodeUri``, ``ContentUri``, ``DefinitionUri``) are swapped for
placeholder S3 locations before the translation, as ``sam validate`` does, and mapped back after.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

# Placeholder bucket for local artifacts; its keys are "<property>/<logical id>".
ARTIFACT_BUCKET = "reelay-local-artifacts"
_LOCAL_PATH_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}


class TemplateError(Exception):
    """The template cannot be served locally (invalid, or uses something the local stack lacks)."""


class _NoValue:
    """``AWS::NoValue``: removes the property or list item it stands in."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that knows CloudFormation's short intrinsic tags (``!Ref``, ``!Sub`` ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_yaml(text: str) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML (or JSON) document."""
    document = yaml.load(text, Loader=_CfnLoader)  # a SafeLoader subclass
    if not isinstance(document, dict):
        raise TemplateError("template is not a mapping")
    return document


@dataclass(frozen=True)
class CloudTemplate:
    """A SAM template translated to CloudFormation, with its local artifact paths.

    ``resources`` are the translated resources (``AWS::Serverless::*`` expanded). ``artifacts``
    maps the placeholder key of each local ``CodeUri``/``ContentUri``/``DefinitionUri`` to the
    directory or file it names. ``parameters`` hold the effective parameter values (defaults
    overridden by the caller), typed as CloudFormation hands them to ``Ref``.
    """

    path: Path
    sam: dict[str, Any]
    resources: dict[str, dict[str, Any]]
    parameters: dict[str, Any]
    conditions: dict[str, Any]
    mappings: dict[str, Any]
    outputs: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent

    def of_type(self, resource_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(logical id, resource) for every translated resource of ``resource_type``."""
        for logical_id, resource in self.resources.items():
            if resource.get("Type") == resource_type:
                yield logical_id, resource

    def artifact(self, location: Mapping[str, Any], *, owner: str) -> Path:
        """The local path behind a translated ``Code``/``Content``/``DefinitionS3Location``."""
        bucket = location.get("S3Bucket", location.get("Bucket"))
        key = location.get("S3Key", location.get("Key"))
        if bucket != ARTIFACT_BUCKET or key not in self.artifacts:
            raise TemplateError(f"{owner}: only local code/definition paths can be served locally, got {location}")
        return self.artifacts[key]


def translate(
    template_path: Path, parameter_overrides: Mapping[str, str] | None = None, *, stack_name: str = "reelay-local"
) -> CloudTemplate:
    """Read ``template_path`` and translate it to plain CloudFormation with aws-sam-translator."""
    sam = load_yaml(template_path.read_text())
    work = copy.deepcopy(sam)
    artifacts = _swap_local_paths(work, template_path.parent)
    declared = work.get("Parameters") or {}
    overrides = dict(parameter_overrides or {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"unknown template parameters: {', '.join(unknown)}")
    raw_values: dict[str, Any] = {
        name: spec["Default"] for name, spec in declared.items() if isinstance(spec, dict) and "Default" in spec
    }
    raw_values.update(overrides)
    missing = sorted(set(declared) - set(raw_values))
    if missing:
        raise TemplateError(f"template parameters without a default need a value: {', '.join(missing)}")
    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::StackName": stack_name}
    # The translator warns about its own unpublished metrics when they are garbage collected.
    logging.getLogger("samtranslator.metrics.metrics").setLevel(logging.ERROR)
    try:
        translated = Translator({}, Parser(), boto_session=boto3.session.Session(region_name=REGION)).translate(
            work, parameter_values={**raw_values, **pseudo}, get_managed_policy_map=lambda: {}
        )
    except InvalidDocumentException as exc:
        problems = "; ".join(str(cause) for cause in exc.causes)
        raise TemplateError(f"{template_path.name} does not translate: {problems}") from None
    parameters = {name: _typed_parameter(declared[name], value) for name, value in raw_values.items()}
    return CloudTemplate(
        path=template_path,
        sam=sam,
        resources=translated.get("Resources") or {},
        parameters=parameters,
        conditions=translated.get("Conditions") or {},
        mappings=translated.get("Mappings") or {},
        outputs=translated.get("Outputs") or {},
        artifacts=artifacts,
    )


def _swap_local_paths(template: dict[str, Any], root: Path) -> dict[str, Path]:
    artifacts: dict[str, Path] = {}

    def swap(owner: str, properties: dict[str, Any], prop: str) -> None:
        value = properties.get(prop)
        if not isinstance(value, str) or value.startswith("s3://"):
            return
        key = f"{prop}/{owner}"
        local = (root / value).resolve()
        if not local.exists():
            raise TemplateError(f"{owner}: {prop} {value!r} does not exist under {root}")
        artifacts[key] = local
        properties[prop] = f"s3://{ARTIFACT_BUCKET}/{key}"

    function_globals = (template.get("Globals") or {}).get("Function") or {}
    swap("Globals", function_globals, "CodeUri")
    for logical_id, resource in (template.get("Resources") or {}).items():
        prop = _LOCAL_PATH_PROPERTIES.get(resource.get("Type", ""))
        if prop:
            properties = resource.setdefault("Properties", {})
            if prop == "CodeUri" and "CodeUri" not in properties and "InlineCode" not in properties:
                # Inherited from Globals: give the function its own key for the same path.
                if "CodeUri/Globals" in artifacts:
                    artifacts[f"CodeUri/{logical_id}"] = artifacts["CodeUri/Globals"]
                    properties["CodeUri"] = f"s3://{ARTIFACT_BUCKET}/CodeUri/{logical_id}"
                continue
            swap(logical_id, properties, prop)
    return artifacts


def _typed_parameter(spec: Mapping[str, Any], value: Any) -> Any:
    kind = str(spec.get("Type", "String"))
    if kind == "CommaDelimitedList" or kind.startswith("List<"):
        if isinstance(value, list):
            return [str(v) for v in value]
        return [item.strip() for item in str(value).split(",")] if str(value) else []
    if kind.startswith("AWS::SSM::Parameter"):
        raise TemplateError(f"SSM parameter types are not supported locally: {kind}")
    return str(value)


@dataclass
class Physical:
    """What CloudFormation knows about one created resource: its Ref value and attributes."""

    ref: Any
    attributes: dict[str, Any] = field(default_factory=dict)


class Resolver:
    """Resolves CloudFormation intrinsics against local physical resources and parameters.

    ``lookup`` returns the :class:`Physical` of a logical id (raising ``KeyError`` while it does
    not exist yet), so resources can be created in dependency order and resolved as they appear.
    """

    _SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")

    def __init__(self, template: CloudTemplate, lookup: Callable[[str], Physical], *, stack_name: str) -> None:
        self._template = template
        self._lookup = lookup
        self._pseudo: dict[str, Any] = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack_name}/local",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }

    def condition(self, name: str) -> bool:
        """The value of a named condition of the template."""
        if name not in self._template.conditions:
            raise TemplateError(f"unknown condition {name!r}")
        return bool(self.resolve(self._template.conditions[name]))

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its local value."""
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, argument),) = value.items()
            handler = self._FUNCTIONS.get(name)
            # "Condition" is an intrinsic only with a condition name (IAM statements use the key too).
            if handler is not None and (name != "Condition" or isinstance(argument, str)):
                return handler(self, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def ref(self, name: str) -> Any:
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._template.parameters:
            return self._template.parameters[name]
        return self._physical(name).ref

    def get_att(self, logical_id: str, attribute: str) -> Any:
        physical = self._physical(logical_id)
        if attribute not in physical.attributes:
            raise TemplateError(f"{logical_id} has no attribute {attribute!r} locally")
        return physical.attributes[attribute]

    def _physical(self, logical_id: str) -> Physical:
        if logical_id not in self._template.resources:
            raise TemplateError(f"reference to unknown resource {logical_id!r}")
        try:
            return self._lookup(logical_id)
        except KeyError:
            raise TemplateError(f"{logical_id} is referenced before it exists locally") from None

    # -- intrinsic functions ------------------------------------------------------------------

    def _fn_ref(self, argument: Any) -> Any:
        return self.ref(str(self.resolve(argument)))

    def _fn_get_att(self, argument: Any) -> Any:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        logical_id, attribute = (self.resolve(part) for part in argument)
        return self.get_att(str(logical_id), str(attribute))

    def _fn_sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {k: self.resolve(v) for k, v in (argument[1] or {}).items()}
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                value = self.get_att(*name.split(".", 1))
            else:
                value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return self._SUB_VARIABLE.sub(replace, str(text))

    def _fn_join(self, argument: Any) -> str:
        delimiter, items = argument
        values = self.resolve(items)
        return str(delimiter).join(str(v) for v in values)

    def _fn_select(self, argument: Any) -> Any:
        index, items = (self.resolve(part) for part in argument)
        return items[int(index)]

    def _fn_split(self, argument: Any) -> list[str]:
        delimiter, text = (self.resolve(part) for part in argument)
        return str(text).split(str(delimiter))

    def _fn_if(self, argument: Any) -> Any:
        name, if_true, if_false = argument
        return self.resolve(if_true if self.condition(name) else if_false)

    def _fn_equals(self, argument: Any) -> bool:
        left, right = (self.resolve(part) for part in argument)
        return str(left) == str(right) if not isinstance(left, list) else left == right

    def _fn_and(self, argument: Any) -> bool:
        return all(self.resolve(part) for part in argument)

    def _fn_or(self, argument: Any) -> bool:
        return any(self.resolve(part) for part in argument)

    def _fn_not(self, argument: Any) -> bool:
        return not self.resolve(argument[0])

    def _fn_condition(self, argument: Any) -> bool:
        return self.condition(str(argument))

    def _fn_find_in_map(self, argument: Any) -> Any:
        name, first, second = (self.resolve(part) for part in argument[:3])
        try:
            return self._template.mappings[name][first][second]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no {name}.{first}.{second}") from None

    def _fn_base64(self, argument: Any) -> str:
        return base64.b64encode(str(self.resolve(argument)).encode()).decode()

    def _fn_get_azs(self, argument: Any) -> list[str]:
        return [f"{REGION}{zone}" for zone in "abc"]

    def _fn_to_json_string(self, argument: Any) -> str:
        return json.dumps(self.resolve(argument), separators=(",", ":"))

    def _fn_length(self, argument: Any) -> int:
        return len(self.resolve(argument))

    def _fn_unsupported(self, argument: Any) -> Any:
        raise TemplateError(f"intrinsic not supported locally: {argument!r}")

    _FUNCTIONS: dict[str, Callable[[Resolver, Any], Any]] = {
        "Ref": _fn_ref,
        "Fn::GetAtt": _fn_get_att,
        "Fn::Sub": _fn_sub,
        "Fn::Join": _fn_join,
        "Fn::Select": _fn_select,
        "Fn::Split": _fn_split,
        "Fn::If": _fn_if,
        "Fn::Equals": _fn_equals,
        "Fn::And": _fn_and,
        "Fn::Or": _fn_or,
        "Fn::Not": _fn_not,
        "Condition": _fn_condition,
        "Fn::FindInMap": _fn_find_in_map,
        "Fn::Base64": _fn_base64,
        "Fn::GetAZs": _fn_get_azs,
        "Fn::ToJsonString": _fn_to_json_string,
        "Fn::Length": _fn_length,
        "Fn::ImportValue": _fn_unsupported,
    }

"""Reading template.yaml in tests: plain YAML with CloudFormation's short intrinsic tags."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from reelay_local.template import load_yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template.yaml"


@cache
def template() -> dict[str, Any]:
    return load_yaml(TEMPLATE.read_text())


def resource(logical_id: str) -> dict[str, Any]:
    return template()["Resources"][logical_id]


def create_task_table(client: Any, name: str) -> None:
    """Create the task table exactly as template.yaml declares it (keys, indexes)."""
    props = resource("TaskTable")["Properties"]
    client.create_table(
        TableName=name,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        BillingMode=props["BillingMode"],
    )

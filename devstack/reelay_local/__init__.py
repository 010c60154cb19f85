"""reelay_local: template.yaml running on loopback against moto, with the real handlers.

``LocalStack`` builds tables, buckets, queues, the state machine, routes, mappings and schedules
from template.yaml and runs every function's handler in this process, each with exactly its own
environment and stopped at its timeout; ``DevEnvironment`` adds the provider simulator. See
``reelay_local.stack`` and ``reelay_local.event_sources`` for what moto does and what the local
stack does instead.
"""

from reelay_local.environment import DevEnvironment
from reelay_local.stack import LocalStack
from reelay_local.template import TemplateError

__all__ = ["DevEnvironment", "LocalStack", "TemplateError"]

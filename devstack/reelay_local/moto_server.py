"""moto in server mode, in this process, on a free loopback port.

The server runs in a thread of this process, so the local stack can hook moto's Lambda
execution (see ``lambda_runtime``) and read the few internals it needs (an SQS message's
visibility deadline) directly.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

from reelay_local.template import ACCOUNT_ID, REGION

LOG = logging.getLogger(__name__)

# Loggers whose chatter drowns a run, and the level they keep: access logs and interpreter
# notes go; errors stay, except the parser's dump of every failed execution (a failed
# execution is an outcome the application expects; its history holds the reason).
_NOISY_LOGGERS = {
    "werkzeug": logging.ERROR,
    "moto": logging.ERROR,
    "botocore.credentials": logging.ERROR,
    "moto.stepfunctions.parser": logging.CRITICAL,
}


class MotoServer:
    """A ``ThreadedMotoServer`` on 127.0.0.1 with Step Functions execution switched on."""

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self._port = 0
        self._saved_sfn_config: dict[str, Any] | None = None
        self._saved_levels: dict[str, int] = {}
        self._restore_fixes: list[Callable[[], None]] = []

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> str:
        """Start the server and enable state machine execution; the endpoint URL."""
        for name, level in _NOISY_LOGGERS.items():
            logger = logging.getLogger(name)
            self._saved_levels[name] = logger.level
            logger.setLevel(level)
        self._install_fixes()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self._port = self._server.get_host_and_port()[1]
        self._saved_sfn_config = dict(default_user_config.get("stepfunctions", {}))
        # Without this, moto stores state machines but never runs them.
        self._post("/moto-api/config", {"stepfunctions": {"execute_state_machine": True}})
        if not default_user_config.get("stepfunctions", {}).get("execute_state_machine"):
            raise RuntimeError("moto did not accept stepfunctions.execute_state_machine")
        return self.endpoint

    def stop(self) -> None:
        """Forget every resource, restore moto's configuration and stop the server."""
        if self._server is None:
            return
        try:
            self._post("/moto-api/reset", {})
            self._post("/moto-api/config", {"stepfunctions": self._saved_sfn_config or {}})
        except OSError:
            LOG.exception("could not reset moto before stopping it")
        self._server.stop()
        self._server = None
        self._remove_fixes()
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)

    def _remove_fixes(self) -> None:
        while self._restore_fixes:
            self._restore_fixes.pop()()

    def _install_fixes(self) -> None:
        """Where moto's behaviour differs from AWS in a way the application would notice."""
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend

        original = StepFunctionsParserBackend.start_execution

        def start_execution(backend: Any, state_machine_arn: str, name: str | None = None, *args: Any) -> Any:
            # moto names an unnamed execution "None", so a second one "already exists";
            # Step Functions gives each a fresh UUID.
            return original(backend, state_machine_arn, name or str(uuid.uuid4()), *args)

        StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign,assignment]

        def restore() -> None:
            StepFunctionsParserBackend.start_execution = original  # type: ignore[method-assign]

        self._restore_fixes.append(restore)

        # moto checks a DynamoDB condition and then writes in plain Python, with nothing between
        # the server's request threads: two conditional writes racing can both pass, and a read
        # can see an item half-updated. DynamoDB makes each request atomic (a conditional write,
        # a transaction), and reelay's exactly-once rules rest on that: each DynamoDB request is
        # served under one lock, so the local stack's races are reelay's, not moto's.
        from moto.dynamodb.responses import DynamoHandler

        served = DynamoHandler.call_action
        lock = threading.Lock()

        def call_action(handler: Any) -> Any:
            with lock:
                return served(handler)

        DynamoHandler.call_action = call_action  # type: ignore[method-assign]

        def restore_dynamodb() -> None:
            DynamoHandler.call_action = served  # type: ignore[method-assign]

        self._restore_fixes.append(restore_dynamodb)

        # moto answers every Query by sorting the whole table (``Table.all_items``) and then
        # testing each item's key: a Query costs O(n log n) in the table's size where DynamoDB's
        # costs what it returns. On a table holding a 10,000-line manifest that is ~0.3 s a
        # query, taken under the lock above, and every function's table calls queue behind it
        # (reconcile, the governor and the batch chunks then time out where AWS would not). Each
        # Query is served from the items it can return instead: the partition it names, or, on
        # an index, the items whose index hash key matches. moto's own code then sorts, pages,
        # filters and projects them as before, so answers are unchanged.
        from moto.dynamodb.models.table import Table

        queried = Table.query

        def query(table: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
            index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
            view = _query_view(table, hash_key, index_name, kwargs.get("hash_key_conditions") or [])
            if view is None:
                return queried(table, hash_key, *args, **kwargs)
            items, table.items = table.items, view  # safe: the lock above serves one request at a time
            try:
                return queried(table, hash_key, *args, **kwargs)
            finally:
                table.items = items

        # moto also sorts those items with a key of ``DynamoType`` objects, whose every comparison
        # converts both values again (a number parsed to a Decimal each time): sorted here by the
        # converted values, computed once an item, into the same order.
        listed_items, sorted_items = Table.all_items, Table.sorted_items

        def all_items(table: Any) -> list[Any]:
            if table.range_key_attr:
                rows = [item for partition in table.items.values() for item in partition.values()]
            else:
                rows = list(table.items.values())
            return sorted(rows, key=lambda x: (x.hash_key.cast_value, x.range_key.cast_value if x.range_key else None))

        def sort_items(table: Any, hash_attrs: list[str], range_attrs: list[str | None], items: list[Any]) -> list[Any]:
            attrs = table._generate_attr_to_sort_by(hash_attrs, range_attrs)
            items.sort(key=lambda x: tuple(x.attrs[key].cast_value for key in attrs))
            return items

        Table.query, Table.all_items, Table.sorted_items = query, all_items, sort_items  # type: ignore[method-assign,assignment]

        def restore_query() -> None:
            Table.query, Table.all_items, Table.sorted_items = queried, listed_items, sorted_items  # type: ignore[method-assign]

        self._restore_fixes.append(restore_query)

        # Before each TransactWriteItems moto deep-copies every table it names, once per item
        # (to roll back a cancelled one): a task's create (the task and its idempotency key)
        # copies the whole table twice, so creating tasks slows as the table fills. Only the items
        # a transaction names can change: those are copied, and put back if it fails.
        import moto.dynamodb.models as dynamodb_models

        transact = dynamodb_models.DynamoDBBackend.transact_write_items

        def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
            saved = _transaction_items(backend, transact_items)
            try:
                transact(backend, transact_items)
            except Exception:
                for table, hash_value, range_value, item in reversed(saved):
                    _put_back(table, hash_value, range_value, item)
                raise

        dynamodb_models.copy = _TablesNotCopied  # type: ignore[assignment]
        dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign,assignment]

        def restore_transactions() -> None:
            dynamodb_models.copy = copy
            dynamodb_models.DynamoDBBackend.transact_write_items = transact  # type: ignore[method-assign]

        self._restore_fixes.append(restore_transactions)

        # moto's server finds the service of every request by listing its own package directory
        # (``os.listdir`` and an ``isdir`` per service, ~200 ``stat`` calls, ≈5 ms a request
        # here). The list never changes while it runs: read it once. Only speed changes, and
        # only the local AWS's: the Lambda durations the local stack measures (make cost) carry
        # less of moto's latency, which real AWS does not have.
        from moto import backends

        listed = backends.list_of_moto_modules
        modules = tuple(listed())
        backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

        def restore_listing() -> None:
            backends.list_of_moto_modules = listed  # type: ignore[assignment]

        self._restore_fixes.append(restore_listing)

    def object_exists(self, bucket: str, key: str) -> bool:
        """Whether ``bucket`` holds ``key`` (read from moto's state, not through a request)."""
        from moto.s3.models import s3_backends

        try:
            found = s3_backends[ACCOUNT_ID]["aws"].buckets[bucket].keys.get(key)
        except KeyError:
            return False
        return found is not None

    def message_visible_at(self, queue_name: str, message_id: str) -> float | None:
        """When an in-flight SQS message becomes visible again (epoch ms), or None if it is gone.

        SQS has no API to read a message's visibility; the pollers use this to tell whether a
        handler backed a message off itself (ChangeMessageVisibility) before they reschedule it.
        """
        from moto.sqs.models import sqs_backends

        try:
            queue = sqs_backends[ACCOUNT_ID][REGION].get_queue(queue_name)
        except Exception:  # the queue is gone: nothing to reschedule
            return None
        for message in list(queue._messages):  # no public accessor exists
            if message.id == message_id:
                return float(message.visible_at)
        return None

    def _post(self, path: str, body: dict[str, Any]) -> bytes:
        request = urllib.request.Request(
            self.endpoint + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return bytes(response.read())


def _query_view(table: Any, hash_key: Any, index_name: str | None, hash_conditions: list[tuple[str, Any]]) -> Any:
    """The items of ``table`` a Query can return, in moto's ``Table.items`` layout; None for all.

    On the table, the partition of ``hash_key``; on an index, the items whose index hash key
    attributes equal the Query's (string keys only, which compare exactly; any other kind of
    key is left to moto on the whole table).
    """
    if index_name is None:
        if hash_key is None:
            return None
        partition = table.items.get(hash_key)
        base: dict[Any, Any] = defaultdict(dict) if table.range_key_attr else {}
        if partition is not None:
            base[hash_key] = partition
        return base
    if not hash_conditions or any(value.type != "S" for _, value in hash_conditions):
        return None
    wanted = [(name, value.value) for name, value in hash_conditions]

    def matches(item: Any) -> bool:
        for name, value in wanted:
            attr = item.attrs.get(name)
            if attr is None or attr.type != "S" or attr.value != value:
                return False
        return True

    view: dict[Any, Any] = defaultdict(dict)
    for key, partition in table.items.items():
        if not table.range_key_attr:
            if matches(partition):
                view[key] = partition
            continue
        for range_key, item in partition.items():
            if matches(item):
                view[key][range_key] = item
    return view


class _TablesNotCopied:
    """``copy`` as moto's DynamoDB backend sees it: a ``Table`` is not copied (its transaction
    backup; ``MotoServer`` backs up the items a transaction names instead); all else is."""

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        from moto.dynamodb.models.table import Table

        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


def _transaction_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
    """``(table, hash key, range key, a copy of the item or None)`` for each item a transaction
    names; an operation that names none well (moto refuses it) is left out."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    saved = []
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.tables[op["TableName"]]
            key = op["Item"] if op_type == "Put" else op["Key"]
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            current = table.get_item(hash_value, range_value)
        except Exception:  # malformed: moto answers it with its own error
            continue
        saved.append((table, hash_value, range_value, copy.deepcopy(current)))
    return saved


def _put_back(table: Any, hash_value: Any, range_value: Any, item: Any) -> None:
    """Leave ``table`` holding ``item`` (None: nothing) at the key, as before a cancelled transaction."""
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
        return
    partition = table.items[hash_value]
    if item is None:
        partition.pop(range_value, None)
        if not partition:
            del table.items[hash_value]
    else:
        partition[range_value] = item

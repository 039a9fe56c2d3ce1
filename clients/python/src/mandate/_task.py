"""Tasks and guarded tools.

`task(...)` starts a task with the agent's identity token when its `with`
(or `async with`) block is entered, holds the task credential, and ends the
task when the block is left, however it is left. `Task.guard` wraps a tool
function so that it runs only on Mandate's `allow`, and reports its result.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import functools
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, cast, get_args

from ._client import MAX_WAIT_SECONDS, AsyncClient, Client
from ._errors import ApiError, Denied, MandateError, ResultNotReported
from ._types import (
    JSON,
    Decision,
    HistoryEntry,
    JSONValue,
    OutputTrust,
    ReportedValue,
    TaskView,
    ValueKind,
)

P = ParamSpec("P")
R = TypeVar("R")

#: The label of data from outside: web pages, mail, anything a third party wrote.
UNTRUSTED = "untrusted"

#: The largest tool result a guard reports as `content`, in bytes of its
#: compact UTF-8 JSON (the server's default body limit is 1 MiB). A larger
#: result is reported without it: the destinations it names stay unseen.
MAX_CONTENT_BYTES = 512 * 1024

#: Mandate's own annotations: the tool catalog a guard sends with each call.
ARGUMENTS = "mandate/arguments"
OUTPUT = "mandate/output"
TEXT_FIELDS = "mandate/textFields"

log = logging.getLogger("mandate")

Labeller = Callable[[Any], Iterable[str]]

_current: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "mandate_current_task", default=None
)


def current_task() -> Task:
    """The task of the innermost `with mandate.task(...)` (or `with t.delegate(...)`)
    block around this code. Raises `MandateError` outside any."""
    task = _current.get()
    if task is None:
        raise MandateError(
            "no Mandate task is active: call guarded tools inside `with mandate.task(...)`"
        )
    return task


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """How a guarded tool is presented to Mandate and reported.

    `server` and `tool` name the call (`action.server`, `action.tool`);
    `annotations` are its MCP hints (`readOnlyHint`, `destructiveHint`,
    `idempotentHint`, `openWorldHint`; missing hints take the MCP defaults,
    destructive and open-world). `untrusted` declares that the tool returns
    content from outside (its results are labelled `untrusted`, and the call
    is sent with `mandate/output: "untrusted"`); `labels` gives the labels
    of a result, a fixed list or a function of the result.
    `approval_timeout` is how long to wait for a person, in seconds
    (`None`: the task's default).

    The tool's catalog, sent with each call in its annotations:
    `destinations` maps the arguments that name a destination (dotted paths
    into the arguments) to their kind, `email`, `account`, `url`, `handle`
    or `phone` (`mandate/arguments`): policies read where each value came
    from (`context.provenance`). `output` says whether the tool's output is
    trusted content (`mandate/output`; unset, an open-world tool's output
    taints the session and a closed-world one's does not, but only a tool
    marked trusted grounds destinations as a trusted result), and
    `text_fields` names the fields of its output that hold free text beyond
    the usual ones (`mandate/textFields`). `report_content` reports what an
    allowed call returned as the result's `content` (when it is JSON of at
    most `MAX_CONTENT_BYTES`), so that the destinations it names ground
    later calls; turn it off for a tool whose output must not leave the
    process.
    """

    server: str
    tool: str
    annotations: Mapping[str, Any] | None = None
    untrusted: bool = False
    labels: Labeller | Iterable[str] | None = None
    approval_timeout: float | None = None
    destinations: Mapping[str, ValueKind] | None = None
    output: OutputTrust | None = None
    text_fields: Sequence[str] | None = None
    report_content: bool = True

    def __post_init__(self) -> None:
        kinds = get_args(ValueKind)
        for path, kind in (self.destinations or {}).items():
            if kind not in kinds:
                raise ValueError(
                    f"destination `{path}` of {self.server}/{self.tool}: unknown kind {kind!r} "
                    f"(one of {', '.join(kinds)})"
                )
        if self.output not in (None, *get_args(OutputTrust)):
            raise ValueError(
                f"output of {self.server}/{self.tool}: {self.output!r} is not "
                "'trusted' or 'untrusted'"
            )
        if self.untrusted and self.output == "trusted":
            raise ValueError(f"{self.server}/{self.tool}: untrusted=True and output='trusted'")
        if isinstance(self.text_fields, str):
            raise TypeError("text_fields is a list of field names, not a string")
        hints = self.annotations or {}
        for key, given in self._catalog().items():
            if key in hints and hints[key] != given:
                raise ValueError(
                    f"{self.server}/{self.tool}: annotation `{key}` is given twice, "
                    "differently (in annotations= and by its keyword)"
                )

    def _catalog(self) -> JSON:
        catalog: JSON = {}
        if self.destinations:
            catalog[ARGUMENTS] = dict(self.destinations)
        if self.output is not None:
            catalog[OUTPUT] = self.output
        elif self.untrusted:
            catalog[OUTPUT] = "untrusted"
        if self.text_fields:
            catalog[TEXT_FIELDS] = list(self.text_fields)
        return catalog

    def action_annotations(self) -> JSON | None:
        """The call's `action.annotations`: the MCP hints and the catalog
        (`mandate/arguments`, `mandate/output`, `mandate/textFields`);
        `None` when there are none."""
        catalog = self._catalog()
        if self.annotations is None and not catalog:
            return None
        return {**(self.annotations or {}), **catalog}

    def untrusted_output(self) -> bool:
        """Whether the tool is declared to return untrusted content."""
        annotations = self.action_annotations() or {}
        return bool(annotations.get(OUTPUT) == "untrusted")

    def result_labels(self, result: Any) -> list[str]:
        labels: list[str] = []
        if callable(self.labels):
            labels.extend(self.labels(result))
        elif self.labels is not None:
            labels.extend(self.labels)
        if self.untrusted_output() and UNTRUSTED not in labels:
            labels.append(UNTRUSTED)
        return labels

    def error_labels(self) -> list[str]:
        return [UNTRUSTED] if self.untrusted_output() else []

    def result_content(self, result: Any) -> JSONValue:
        """What a call's `result` is reported as (`content`): the result,
        as JSON, when `report_content` is on and it is plain JSON (dicts with
        string keys, lists, tuples, strings, finite numbers, booleans,
        `None`) of at most `MAX_CONTENT_BYTES`; else `None`, no content."""
        if not self.report_content:
            return None
        return reportable_content(result)


def reportable_content(result: Any) -> JSONValue:
    """`result` as a result report's `content` if it is plain JSON of at most
    `MAX_CONTENT_BYTES` (compact, UTF-8), else `None`. Other objects are not
    converted: what is reported is what the tool returned."""
    if not _plain_json(result, 0):
        return None
    try:
        encoded = json.dumps(result, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        size = len(encoded.encode("utf-8"))  # a lone surrogate does not encode
    except (TypeError, ValueError, RecursionError):
        return None
    if size > MAX_CONTENT_BYTES:
        log.debug("a tool result of %d bytes is reported without its content", size)
        return None
    # A copy, as JSON has it (tuples are arrays): what is sent is what was measured.
    return cast(JSONValue, json.loads(encoded))


# Deeper than the server reads results (32 levels), and far from Python's recursion limit.
_MAX_CONTENT_DEPTH = 64


def _plain_json(value: Any, depth: int) -> bool:
    if depth > _MAX_CONTENT_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_json(v, depth + 1) for v in value)
    return False


def jsonable(value: Any) -> Any:
    """`value` as JSON the decision request can carry: containers become
    objects and arrays, Pydantic models and dataclasses their fields, enums
    their values; anything else its `str`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def call_arguments(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    skip: Iterable[str] = (),
) -> JSON:
    """The arguments of a call of `fn`, by parameter name, defaults filled
    in: what the tool receives, as the decision request's `arguments`.
    Parameters named in `skip` (a framework's context object) are left out."""
    skipped = set(skip)
    signature = inspect.signature(fn)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    arguments: JSON = {}
    for position, (name, value) in enumerate(bound.arguments.items()):
        kind = signature.parameters[name].kind
        if (position == 0 and name in ("self", "cls")) or name in skipped:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update({str(k): jsonable(v) for k, v in value.items()})
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            arguments[name] = [jsonable(v) for v in value]
        else:
            arguments[name] = jsonable(value)
    return arguments


def _already_over(error: ApiError) -> bool:
    """Whether ending a task failed because it is over already: its root
    credential no longer verifies (revoked by an end elsewhere, or expired
    with the task), which is what ending it would have achieved."""
    return error.status == 401 and error.error == "invalid_token"


def _too_large(error: ApiError, content: JSONValue) -> bool:
    """Whether a report was refused for its size (the server's
    `max_body_bytes` is below `MAX_CONTENT_BYTES`) while it carried content:
    nothing was recorded, and the report goes again without it, leaving what
    the content named unseen."""
    return content is not None and error.status == 413


class _Connection:
    """The clients a task and its sub-agents' tasks share."""

    def __init__(
        self, base_url: str | None, client: Client | None, async_client: AsyncClient | None
    ) -> None:
        self._base_url = base_url
        self._client = client
        self._async_client = async_client
        self._own_client = client is None
        self._own_async_client = async_client is None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self._base_url)
        return self._client

    @property
    def async_client(self) -> AsyncClient:
        if self._async_client is None:
            self._async_client = AsyncClient(self._base_url)
        return self._async_client

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
        # An async client cannot be closed without its event loop; forget it.
        if self._own_async_client:
            self._async_client = None

    async def aclose(self) -> None:
        if self._own_async_client and self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None
        self.close()


class Task:
    """A Mandate task, and the credential one agent holds in it.

    Made by `mandate.task(...)` (the root agent's, started and ended by its
    `with` block) or by `Task.delegate` (a sub-agent's, which the root's end
    revokes). Guard tools with `Task.guard`; everything runs under
    `credential`, as `agent`.
    """

    def __init__(
        self,
        *,
        intent: str,
        tools: Iterable[str],
        params: JSON | None = None,
        labels: Iterable[str] | None = None,
        ttl_seconds: int = 900,
        max_depth: int = 0,
        identity_token: str | Callable[[], str] | None = None,
        base_url: str | None = None,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        approval_timeout: float = 300.0,
        prompt: str | None = None,
        grounded_values: Iterable[str] | None = None,
    ) -> None:
        self.intent = intent
        self.prompt = prompt
        self.grounded_values = None if grounded_values is None else list(grounded_values)
        self.tools = list(tools)
        self.params = dict(params or {})
        self.labels = list(labels or [])
        self.ttl_seconds = ttl_seconds
        self.max_depth = max_depth
        self.approval_timeout = approval_timeout
        self._identity_token = identity_token
        self._connection = _Connection(base_url, client, async_client)
        self._root = True
        self.task_id: str | None = None
        self.credential: str | None = None
        self.agent: str | None = None
        self.depth = 0
        self.expires_at: str | None = None
        self._ended = False
        self._context: list[contextvars.Token[Task | None]] = []

    # Identity and state.

    def _token(self) -> str:
        token = self._identity_token
        if callable(token):
            token = token()
        if token is None:
            token = os.environ.get("MANDATE_IDENTITY_TOKEN")
        if not token:
            raise MandateError(
                "no identity token to start the task: pass identity_token= "
                "or set MANDATE_IDENTITY_TOKEN"
            )
        return token

    def _started(self) -> tuple[str, str, str]:
        if self.task_id is None or self.credential is None or self.agent is None:
            raise MandateError("the task is not started: use it in a `with` block")
        if self._ended:
            raise MandateError(f"task {self.task_id} has ended")
        return self.task_id, self.credential, self.agent

    @property
    def client(self) -> Client:
        return self._connection.client

    @property
    def async_client(self) -> AsyncClient:
        return self._connection.async_client

    # Start and end.

    def start(self) -> Task:
        """Starts the task (`POST /v1/tasks`) with the identity token; the
        root agent is the token's subject, as the server reports it."""
        if self.task_id is not None:
            return self
        token = self._token()
        started = self.client.start_task(
            token,
            intent=self.intent,
            tools=self.tools,
            ttl_seconds=self.ttl_seconds,
            labels=self.labels,
            params=self.params,
            max_depth=self.max_depth,
            prompt=self.prompt,
            grounded_values=self.grounded_values,
        )
        self._adopt(started["task_id"], started["credential"], started["expires_at"])
        try:
            self.agent = self.client.show_task(started["task_id"], started["credential"])["agent"]
        except BaseException:
            self.client.end_task(started["task_id"], started["credential"])
            raise
        return self

    async def astart(self) -> Task:
        if self.task_id is not None:
            return self
        token = self._token()
        client = self.async_client
        started = await client.start_task(
            token,
            intent=self.intent,
            tools=self.tools,
            ttl_seconds=self.ttl_seconds,
            labels=self.labels,
            params=self.params,
            max_depth=self.max_depth,
            prompt=self.prompt,
            grounded_values=self.grounded_values,
        )
        self._adopt(started["task_id"], started["credential"], started["expires_at"])
        try:
            view = await client.show_task(started["task_id"], started["credential"])
            self.agent = view["agent"]
        except BaseException:
            await client.end_task(started["task_id"], started["credential"])
            raise
        return self

    def _adopt(self, task_id: str, credential: str, expires_at: str) -> None:
        self.task_id, self.credential, self.expires_at = task_id, credential, expires_at

    def end(self) -> None:
        """Ends the task (`DELETE /v1/tasks/{id}`): every credential issued
        under it is revoked. Only the root agent's task ends the task; a
        sub-agent's does nothing here."""
        if self._root and self.task_id is not None and self.credential and not self._ended:
            try:
                self.client.end_task(self.task_id, self.credential)
            except ApiError as e:
                if not _already_over(e):
                    raise
        self._ended = True

    async def aend(self) -> None:
        if self._root and self.task_id is not None and self.credential and not self._ended:
            try:
                await self.async_client.end_task(self.task_id, self.credential)
            except ApiError as e:
                if not _already_over(e):
                    raise
        self._ended = True

    def __enter__(self) -> Task:
        self.start()
        self._context.append(_current.set(self))
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        _current.reset(self._context.pop())
        try:
            self.end()
        except MandateError:
            if error is None:
                raise
            log.warning("could not end Mandate task %s", self.task_id, exc_info=True)
        finally:
            if self._root:
                self._connection.close()

    async def __aenter__(self) -> Task:
        await self.astart()
        self._context.append(_current.set(self))
        return self

    async def __aexit__(self, kind: object, error: object, trace: object) -> None:
        _current.reset(self._context.pop())
        try:
            await self.aend()
        except MandateError:
            if error is None:
                raise
            log.warning("could not end Mandate task %s", self.task_id, exc_info=True)
        finally:
            if self._root:
                await self._connection.aclose()

    # Delegation and inspection.

    def _sub(self, agent: str, credential: str, expires_at: str, depth: int) -> Task:
        sub = Task.__new__(Task)
        sub.__dict__.update(self.__dict__)
        sub.tools = []
        sub._root = False
        sub._context = []
        sub.agent = agent
        sub.credential = credential
        sub.expires_at = expires_at
        sub.depth = depth
        sub._identity_token = None
        return sub

    def delegate(
        self,
        agent: str,
        *,
        tools: Iterable[str],
        labels: Iterable[str] | None = None,
        ttl_seconds: int | None = None,
    ) -> Task:
        """A sub-agent's task: a narrower credential for `agent`, holding
        `tools` (a subset of this credential's). Hand the sub-agent this
        object (or its `credential`), never this task's."""
        task_id, credential, _ = self._started()
        tools = list(tools)
        given = self.client.delegate(
            task_id,
            credential,
            agent=agent,
            tools=tools,
            labels=None if labels is None else list(labels),
            ttl_seconds=ttl_seconds,
        )
        sub = self._sub(agent, given["credential"], given["expires_at"], given["depth"])
        sub.tools = tools
        return sub

    async def adelegate(
        self,
        agent: str,
        *,
        tools: Iterable[str],
        labels: Iterable[str] | None = None,
        ttl_seconds: int | None = None,
    ) -> Task:
        task_id, credential, _ = self._started()
        tools = list(tools)
        given = await self.async_client.delegate(
            task_id,
            credential,
            agent=agent,
            tools=tools,
            labels=None if labels is None else list(labels),
            ttl_seconds=ttl_seconds,
        )
        sub = self._sub(agent, given["credential"], given["expires_at"], given["depth"])
        sub.tools = tools
        return sub

    def show(self) -> TaskView:
        """The task, its delegation tree and its history (`GET /v1/tasks/{id}`)."""
        task_id, credential, _ = self._started()
        return self.client.show_task(task_id, credential)

    async def ashow(self) -> TaskView:
        task_id, credential, _ = self._started()
        return await self.async_client.show_task(task_id, credential)

    # Deciding, waiting for people, reporting.

    def request(self, spec: ToolSpec, arguments: JSON) -> JSON:
        """The decision request of a call of `spec` with `arguments` under
        this credential (Mandate fills in the task and its history)."""
        _, _, agent = self._started()
        action: JSON = {"server": spec.server, "tool": spec.tool}
        annotations = spec.action_annotations()
        if annotations is not None:
            action["annotations"] = annotations
        return {"principal": {"id": agent}, "action": action, "arguments": arguments}

    def _timeout(self, spec: ToolSpec) -> float:
        return self.approval_timeout if spec.approval_timeout is None else spec.approval_timeout

    def authorize(self, spec: ToolSpec, arguments: JSON) -> Decision:
        """Asks Mandate about a call and returns its `allow`; on
        `approval_required`, waits for the person (withdrawing the approval
        when the wait ends unanswered) and asks again with the approval.
        Raises `Denied` for anything but `allow`."""
        _, credential, _ = self._started()
        request = self.request(spec, arguments)
        decision = self.client.decide(request, credential=credential)
        approval_id = decision.get("approval_id")
        if decision["decision"] == "approval_required" and approval_id is not None:
            self._wait(approval_id, self._timeout(spec))
            decision = self.client.decide(
                {**request, "approval_id": approval_id}, credential=credential
            )
        if decision["decision"] != "allow":
            raise Denied(decision)
        return decision

    async def aauthorize(self, spec: ToolSpec, arguments: JSON) -> Decision:
        _, credential, _ = self._started()
        client = self.async_client
        request = self.request(spec, arguments)
        decision = await client.decide(request, credential=credential)
        approval_id = decision.get("approval_id")
        if decision["decision"] == "approval_required" and approval_id is not None:
            await self._await(approval_id, self._timeout(spec))
            decision = await client.decide(
                {**request, "approval_id": approval_id}, credential=credential
            )
        if decision["decision"] != "allow":
            raise Denied(decision)
        return decision

    def _wait(self, approval_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                wait = max(1, math.ceil(min(left, MAX_WAIT_SECONDS)))
                if self.client.approval(approval_id, wait=wait)["status"] != "pending":
                    return
        except BaseException:
            self._withdraw(approval_id, "the agent stopped waiting (an error)")
            raise
        self._withdraw(approval_id, f"no answer within {timeout:g} s")

    async def _await(self, approval_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.async_client
        try:
            while (left := deadline - time.monotonic()) > 0:
                wait = max(1, math.ceil(min(left, MAX_WAIT_SECONDS)))
                if (await client.approval(approval_id, wait=wait))["status"] != "pending":
                    return
        except BaseException:
            await self._awithdraw(approval_id, "the agent stopped waiting (cancelled or an error)")
            raise
        await self._awithdraw(approval_id, f"no answer within {timeout:g} s")

    def _withdraw(self, approval_id: str, reason: str) -> None:
        try:
            self.client.withdraw(approval_id, credential=self.credential, reason=reason)
        except ApiError as e:
            # Answered meanwhile: asking again with it tells which way.
            if e.error != "not_pending":
                raise

    async def _awithdraw(self, approval_id: str, reason: str) -> None:
        try:
            await self.async_client.withdraw(approval_id, credential=self.credential, reason=reason)
        except ApiError as e:
            if e.error != "not_pending":
                raise

    def report(
        self,
        decision_id: str,
        *,
        status: str,
        labels: Iterable[str] = (),
        content: JSONValue = None,
        values: Iterable[ReportedValue] | None = None,
    ) -> HistoryEntry:
        """Reports what an allowed call returned (`ok` or `error`) with the
        labels of its data; they enter the task's session. `content` (what
        the call returned, any JSON) and `values` (destinations found in
        it) ground later calls' destinations."""
        _, credential, _ = self._started()
        return self.client.report_result(
            decision_id,
            credential,
            status=status,
            labels=list(labels),
            content=content,
            values=None if values is None else list(values),
        )

    async def areport(
        self,
        decision_id: str,
        *,
        status: str,
        labels: Iterable[str] = (),
        content: JSONValue = None,
        values: Iterable[ReportedValue] | None = None,
    ) -> HistoryEntry:
        _, credential, _ = self._started()
        return await self.async_client.report_result(
            decision_id,
            credential,
            status=status,
            labels=list(labels),
            content=content,
            values=None if values is None else list(values),
        )

    # Guarding.

    def call(self, spec: ToolSpec, arguments: JSON, run: Callable[[], R]) -> R:
        """Runs `run()` only if Mandate allows the call of `spec` with
        `arguments`, then reports its result (with its labels, and as
        `content` unless `spec` says otherwise) or its failure, and returns
        it."""
        decision = self.authorize(spec, arguments)
        try:
            result = run()
        except BaseException:
            self._report_failure(decision["decision_id"], spec)
            raise
        decision_id = decision["decision_id"]
        labels, content = spec.result_labels(result), spec.result_content(result)
        try:
            try:
                self.report(decision_id, status="ok", labels=labels, content=content)
            except ApiError as e:
                if not _too_large(e, content):
                    raise
                self.report(decision_id, status="ok", labels=labels)
        except MandateError as e:
            raise ResultNotReported(decision_id, e) from e
        return result

    async def acall(self, spec: ToolSpec, arguments: JSON, run: Callable[[], Awaitable[R]]) -> R:
        """`call` for coroutines: nothing here blocks the event loop."""
        decision = await self.aauthorize(spec, arguments)
        try:
            result = await run()
        except BaseException:
            await self._areport_failure(decision["decision_id"], spec)
            raise
        decision_id = decision["decision_id"]
        labels, content = spec.result_labels(result), spec.result_content(result)
        try:
            try:
                await self.areport(decision_id, status="ok", labels=labels, content=content)
            except ApiError as e:
                if not _too_large(e, content):
                    raise
                await self.areport(decision_id, status="ok", labels=labels)
        except MandateError as e:
            raise ResultNotReported(decision_id, e) from e
        return result

    def _report_failure(self, decision_id: str, spec: ToolSpec) -> None:
        try:
            self.report(decision_id, status="error", labels=spec.error_labels())
        except MandateError:
            log.warning("could not report the failure of decision %s", decision_id, exc_info=True)

    async def _areport_failure(self, decision_id: str, spec: ToolSpec) -> None:
        try:
            await self.areport(decision_id, status="error", labels=spec.error_labels())
        except MandateError:
            log.warning("could not report the failure of decision %s", decision_id, exc_info=True)

    def guard(
        self,
        *,
        server: str,
        tool: str | None = None,
        annotations: Mapping[str, Any] | None = None,
        untrusted: bool = False,
        labels: Labeller | Iterable[str] | None = None,
        approval_timeout: float | None = None,
        destinations: Mapping[str, ValueKind] | None = None,
        output: OutputTrust | None = None,
        text_fields: Iterable[str] | None = None,
        report_content: bool = True,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorates a tool function (plain or `async def`) so that each call
        is decided with its actual arguments under this task and runs only on
        `allow`; see `ToolSpec` for the parameters. Raises `Denied` when it
        does not run."""
        return _guard(
            lambda: self,
            tool,
            functools.partial(
                ToolSpec,
                server=server,
                annotations=annotations,
                untrusted=untrusted,
                labels=labels,
                approval_timeout=approval_timeout,
                destinations=destinations,
                output=output,
                text_fields=None if text_fields is None else _names(text_fields),
                report_content=report_content,
            ),
        )


def guard(
    *,
    server: str,
    tool: str | None = None,
    annotations: Mapping[str, Any] | None = None,
    untrusted: bool = False,
    labels: Labeller | Iterable[str] | None = None,
    approval_timeout: float | None = None,
    destinations: Mapping[str, ValueKind] | None = None,
    output: OutputTrust | None = None,
    text_fields: Iterable[str] | None = None,
    report_content: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """`Task.guard` for the task active when the tool is called (the
    innermost `with mandate.task(...)`): define tools once, at module level."""
    return _guard(
        current_task,
        tool,
        functools.partial(
            ToolSpec,
            server=server,
            annotations=annotations,
            untrusted=untrusted,
            labels=labels,
            approval_timeout=approval_timeout,
            destinations=destinations,
            output=output,
            text_fields=None if text_fields is None else _names(text_fields),
            report_content=report_content,
        ),
    )


def _names(names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError("text_fields is a list of field names, not a string")
    return tuple(names)


def _guard(
    task_of: Callable[[], Task],
    tool: str | None,
    spec_of: Callable[..., ToolSpec],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        spec = spec_of(tool=tool or fn.__name__)
        if inspect.iscoroutinefunction(fn):
            coroutine = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                arguments = call_arguments(fn, args, kwargs)
                return await task_of().acall(spec, arguments, lambda: coroutine(*args, **kwargs))

            guarded_async.mandate_spec = spec  # type: ignore[attr-defined]
            return cast(Callable[P, R], guarded_async)

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            arguments = call_arguments(fn, args, kwargs)
            return task_of().call(spec, arguments, lambda: fn(*args, **kwargs))

        guarded.mandate_spec = spec  # type: ignore[attr-defined]
        return guarded

    return decorate


def task(
    *,
    intent: str,
    tools: Iterable[str],
    params: JSON | None = None,
    labels: Iterable[str] | None = None,
    ttl_seconds: int = 900,
    max_depth: int = 0,
    identity_token: str | Callable[[], str] | None = None,
    base_url: str | None = None,
    client: Client | None = None,
    async_client: AsyncClient | None = None,
    approval_timeout: float = 300.0,
    prompt: str | None = None,
    grounded_values: Iterable[str] | None = None,
) -> Task:
    """A task to use as `with mandate.task(...) as t:` (or `async with`).

    Entering starts it with the agent's identity token (`identity_token`, a
    string or a function returning one, else `MANDATE_IDENTITY_TOKEN`) on
    the server at `base_url` (else `MANDATE_URL`, else
    `http://127.0.0.1:8181`); leaving ends it, on exceptions too, which
    revokes every credential delegated under it. `tools` are `server/tool`
    names; `params` the task's free parameters (such as
    `allowed_recipients`); `approval_timeout` how long guarded calls wait
    for a person by default, in seconds. `prompt` is the person's
    instruction as written: the destinations it names (addresses, URLs,
    IBANs, `+` phone numbers, `@handles`) ground the task's calls.
    `grounded_values` are further destinations the task may use, each a
    value or a `,`/`;` list of them. Both are sent only when given.
    """
    return Task(
        intent=intent,
        tools=tools,
        params=params,
        labels=labels,
        ttl_seconds=ttl_seconds,
        max_depth=max_depth,
        identity_token=identity_token,
        base_url=base_url,
        client=client,
        async_client=async_client,
        approval_timeout=approval_timeout,
        prompt=prompt,
        grounded_values=grounded_values,
    )


T = TypeVar("T")


def guard_each(
    tools: Sequence[T],
    guard_one: Callable[..., R],
    name_of: Callable[[T], str],
    *,
    server: str,
    task: Task | None,
    annotations: Mapping[str, Mapping[str, Any]] | None,
    untrusted: Iterable[str],
    approval_timeout: float | None,
) -> list[R]:
    """Every tool of `tools` guarded by an adapter's one-tool guard
    `guard_one`, all on `server`: what each adapter's "guard these tools"
    does. `annotations` maps a tool's name (`name_of`) to its MCP hints;
    `untrusted` names the tools that return content from outside."""
    outside = set(untrusted)
    return [
        guard_one(
            tool,
            server=server,
            task=task,
            annotations=(annotations or {}).get(name_of(tool)),
            untrusted=name_of(tool) in outside,
            approval_timeout=approval_timeout,
        )
        for tool in tools
    ]


__all__ = [
    "MAX_CONTENT_BYTES",
    "UNTRUSTED",
    "Task",
    "ToolSpec",
    "call_arguments",
    "current_task",
    "guard",
    "guard_each",
    "jsonable",
    "reportable_content",
    "task",
]

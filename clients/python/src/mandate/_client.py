"""Clients for Mandate's HTTP API: `Client` (blocking) and `AsyncClient`.

Each operation is described once, as a `_Call` (method, path, bearer token,
body, query), and sent by either client; answers are checked the same way:
anything but the expected status raises `ApiError` with the body's `error`
and `message`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import httpx

from ._errors import ApiError, TransportError
from ._types import (
    JSON,
    Approval,
    ApprovalList,
    CheckpointView,
    ConsistencyProof,
    Decision,
    Delegated,
    HistoryEntry,
    JSONValue,
    ReceiptBundle,
    ReportedValue,
    TaskEnded,
    TaskStarted,
    TaskView,
    TokenExchanged,
)

DEFAULT_URL = "http://127.0.0.1:8181"
#: `POST /v1/token`'s grant type and Mandate's subject token type.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TASK_CREDENTIAL = "urn:mandate:token-type:task-credential"
#: The longest long poll the server holds (`GET /v1/approvals/{id}?wait=`).
MAX_WAIT_SECONDS = 60


def _segment(value: str) -> str:
    return quote(value, safe="")


@dataclass
class _Call:
    method: str
    path: str
    token: str | None = None
    json: Any = None
    form: dict[str, str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    expect: tuple[int, ...] = (200,)
    accept: str | None = None
    timeout: float | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if self.accept is not None:
            headers["accept"] = self.accept
        return headers


def _answer(call: _Call, response: httpx.Response) -> Any:
    if response.status_code in call.expect:
        if call.accept == "text/plain":
            return response.text
        return response.json()
    error, message = "http_error", response.text
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = str(body.get("error", error))
        message = str(body.get("message", body.get("error_description", message)))
    raise ApiError(response.status_code, error, message)


# The operations. Each returns the call to send; both clients send them.


def _decide(request: JSON, credential: str | None) -> _Call:
    return _Call("POST", "/v1/decide", credential, json=request)


def _start(token: str, body: JSON) -> _Call:
    return _Call("POST", "/v1/tasks", token, json=body, expect=(201,))


def _show(task_id: str, token: str) -> _Call:
    return _Call("GET", f"/v1/tasks/{_segment(task_id)}", token)


def _delegate(task_id: str, credential: str, body: JSON) -> _Call:
    return _Call(
        "POST", f"/v1/tasks/{_segment(task_id)}/delegate", credential, json=body, expect=(201,)
    )


def _end(task_id: str, token: str) -> _Call:
    return _Call("DELETE", f"/v1/tasks/{_segment(task_id)}", token)


def _report(
    decision_id: str,
    credential: str,
    status: str,
    labels: list[str] | None,
    content: JSONValue,
    values: list[ReportedValue] | None,
) -> _Call:
    body: JSON = {"status": status, "labels": list(labels or [])}
    # JSON `null` content is no content: the server reads both the same.
    if content is not None:
        body["content"] = content
    if values is not None:
        body["values"] = [{"value": v["value"], "field": v["field"]} for v in values]
    return _Call("POST", f"/v1/decisions/{_segment(decision_id)}/result", credential, json=body)


def _approval(approval_id: str, token: str | None, wait: float, timeout: float | None) -> _Call:
    params = {}
    if wait > 0:
        params["wait"] = f"{min(int(wait), MAX_WAIT_SECONDS)}s"
    # The long poll holds the answer up to `wait`: give the read that long
    # and then some.
    read = None if timeout is None else max(timeout, wait + 10)
    return _Call(
        "GET", f"/v1/approvals/{_segment(approval_id)}", token, params=params, timeout=read
    )


def _approvals(token: str, status: str, limit: int | None) -> _Call:
    params = {"status": status}
    if limit is not None:
        params["limit"] = str(limit)
    return _Call("GET", "/v1/approvals", token, params=params)


def _resolve(approval_id: str, token: str, verb: str, reason: str) -> _Call:
    return _Call(
        "POST", f"/v1/approvals/{_segment(approval_id)}/{verb}", token, json={"reason": reason}
    )


def _withdraw(approval_id: str, credential: str | None, reason: str | None) -> _Call:
    body: JSON = {} if reason is None else {"reason": reason}
    return _Call("POST", f"/v1/approvals/{_segment(approval_id)}/withdraw", credential, json=body)


def _exchange(credential: str, decision_id: str, resource: str, scope: str | None) -> _Call:
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": credential,
        "subject_token_type": TASK_CREDENTIAL,
        "resource": resource,
        "decision_id": decision_id,
    }
    if scope is not None:
        form["scope"] = scope
    return _Call("POST", "/v1/token", form=form)


def _receipt(decision_id: str) -> _Call:
    return _Call("GET", f"/v1/receipts/{_segment(decision_id)}")


def _checkpoint() -> _Call:
    return _Call("GET", "/v1/checkpoint", accept="application/json")


def _consistency(first: int, second: int) -> _Call:
    return _Call("GET", "/v1/proofs/consistency", params={"from": str(first), "to": str(second)})


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("MANDATE_URL") or DEFAULT_URL).rstrip("/")


class Client:
    """A blocking client of one Mandate server.

    `base_url` defaults to `MANDATE_URL`, else `http://127.0.0.1:8181`.
    Every method raises `ApiError` for an error answer and
    `TransportError` when no answer came.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        self.timeout = timeout
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _Call) -> Any:
        try:
            response = self._http.request(
                call.method,
                call.path,
                headers=call.headers(),
                json=call.json,
                data=call.form,
                params=call.params,
                timeout=call.timeout if call.timeout is not None else self.timeout,
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{call.method} {call.path}: {e}") from e
        return _answer(call, response)

    def decide(self, request: JSON, *, credential: str | None = None) -> Decision:
        """`POST /v1/decide`. Under a task credential, leave `context.task`
        and `context.session` out: Mandate fills them."""
        return cast(Decision, self._send(_decide(request, credential)))

    def start_task(
        self,
        identity_token: str,
        *,
        intent: str,
        tools: list[str],
        ttl_seconds: int,
        labels: list[str] | None = None,
        params: JSON | None = None,
        max_depth: int = 0,
        prompt: str | None = None,
        grounded_values: list[str] | None = None,
    ) -> TaskStarted:
        """`POST /v1/tasks` with the agent's identity token (a JWT).

        `prompt` is the person's instruction as written (at most 16 KiB): the
        destinations it names ground the task's calls as `prompt`.
        `grounded_values` are destinations the task may use (each a value or
        a `,`/`;` list of them), grounding its calls as `task_params`. Each
        is sent only when given."""
        body = _task_body(
            intent, tools, ttl_seconds, labels, params, max_depth, prompt, grounded_values
        )
        return cast(TaskStarted, self._send(_start(identity_token, body)))

    def show_task(self, task_id: str, token: str) -> TaskView:
        """`GET /v1/tasks/{id}` with a credential of the task, the root
        agent's identity token or an approver's token."""
        return cast(TaskView, self._send(_show(task_id, token)))

    def delegate(
        self,
        task_id: str,
        credential: str,
        *,
        agent: str,
        tools: list[str],
        labels: list[str] | None = None,
        ttl_seconds: int | None = None,
    ) -> Delegated:
        """`POST /v1/tasks/{id}/delegate`: a narrower credential for `agent`."""
        body = _delegation_body(agent, tools, labels, ttl_seconds)
        return cast(Delegated, self._send(_delegate(task_id, credential, body)))

    def end_task(self, task_id: str, token: str) -> TaskEnded:
        """`DELETE /v1/tasks/{id}`: ends the task, revoking its credentials."""
        return cast(TaskEnded, self._send(_end(task_id, token)))

    def report_result(
        self,
        decision_id: str,
        credential: str,
        *,
        status: str,
        labels: list[str] | None = None,
        content: JSONValue = None,
        values: list[ReportedValue] | None = None,
    ) -> HistoryEntry:
        """`POST /v1/decisions/{id}/result`: `status` is `ok` or `error`.

        `content` is what the call returned, any JSON (the server finds the
        destinations it names); `values` are destinations found in the
        result by the caller (`ReportedValue(value=…, field="structured")`).
        Each is sent only when given. Whether the result is trusted is the
        server's call, from the annotations the call was decided with."""
        call = _report(decision_id, credential, status, labels, content, values)
        return cast(HistoryEntry, self._send(call))

    def approval(self, approval_id: str, *, token: str | None = None, wait: float = 0) -> Approval:
        """`GET /v1/approvals/{id}`; with `wait` (seconds, at most 60) a long
        poll that answers once the approval stops being pending."""
        return cast(Approval, self._send(_approval(approval_id, token, wait, self.timeout)))

    def approvals(
        self, approver_token: str, *, status: str = "pending", limit: int | None = None
    ) -> list[Approval]:
        """`GET /v1/approvals`, newest first (approvers only)."""
        listed = cast(ApprovalList, self._send(_approvals(approver_token, status, limit)))
        return listed["items"]

    def approve(self, approval_id: str, approver_token: str, *, reason: str) -> Approval:
        """`POST /v1/approvals/{id}/approve` (approvers only)."""
        return cast(Approval, self._send(_resolve(approval_id, approver_token, "approve", reason)))

    def deny(self, approval_id: str, approver_token: str, *, reason: str) -> Approval:
        """`POST /v1/approvals/{id}/deny` (approvers only)."""
        return cast(Approval, self._send(_resolve(approval_id, approver_token, "deny", reason)))

    def withdraw(
        self, approval_id: str, *, credential: str | None = None, reason: str | None = None
    ) -> Approval:
        """`POST /v1/approvals/{id}/withdraw`, by the requester: the task
        credential the call was decided under, or none."""
        return cast(Approval, self._send(_withdraw(approval_id, credential, reason)))

    def exchange_token(
        self, credential: str, *, decision_id: str, resource: str, scope: str | None = None
    ) -> TokenExchanged:
        """`POST /v1/token`: a JWT for one downstream resource, for the call
        `decision_id` allowed."""
        return cast(TokenExchanged, self._send(_exchange(credential, decision_id, resource, scope)))

    def receipt(self, decision_id: str) -> ReceiptBundle:
        """`GET /v1/receipts/{decision_id}`: the receipt with its proof."""
        return cast(ReceiptBundle, self._send(_receipt(decision_id)))

    def checkpoint(self) -> CheckpointView:
        """`GET /v1/checkpoint`, as JSON (its `note` is the signed note)."""
        return cast(CheckpointView, self._send(_checkpoint()))

    def consistency(self, first: int, second: int) -> ConsistencyProof:
        """`GET /v1/proofs/consistency?from=first&to=second`."""
        return cast(ConsistencyProof, self._send(_consistency(first, second)))

    def health(self) -> JSON:
        """`GET /v1/health`."""
        return cast(JSON, self._send(_Call("GET", "/v1/health")))


class AsyncClient:
    """The same operations as `Client`, for asyncio: nothing blocks the
    event loop, long polls included."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = _base_url(base_url)
        self.timeout = timeout
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> Any:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                headers=call.headers(),
                json=call.json,
                data=call.form,
                params=call.params,
                timeout=call.timeout if call.timeout is not None else self.timeout,
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{call.method} {call.path}: {e}") from e
        return _answer(call, response)

    async def decide(self, request: JSON, *, credential: str | None = None) -> Decision:
        return cast(Decision, await self._send(_decide(request, credential)))

    async def start_task(
        self,
        identity_token: str,
        *,
        intent: str,
        tools: list[str],
        ttl_seconds: int,
        labels: list[str] | None = None,
        params: JSON | None = None,
        max_depth: int = 0,
        prompt: str | None = None,
        grounded_values: list[str] | None = None,
    ) -> TaskStarted:
        body = _task_body(
            intent, tools, ttl_seconds, labels, params, max_depth, prompt, grounded_values
        )
        return cast(TaskStarted, await self._send(_start(identity_token, body)))

    async def show_task(self, task_id: str, token: str) -> TaskView:
        return cast(TaskView, await self._send(_show(task_id, token)))

    async def delegate(
        self,
        task_id: str,
        credential: str,
        *,
        agent: str,
        tools: list[str],
        labels: list[str] | None = None,
        ttl_seconds: int | None = None,
    ) -> Delegated:
        body = _delegation_body(agent, tools, labels, ttl_seconds)
        return cast(Delegated, await self._send(_delegate(task_id, credential, body)))

    async def end_task(self, task_id: str, token: str) -> TaskEnded:
        return cast(TaskEnded, await self._send(_end(task_id, token)))

    async def report_result(
        self,
        decision_id: str,
        credential: str,
        *,
        status: str,
        labels: list[str] | None = None,
        content: JSONValue = None,
        values: list[ReportedValue] | None = None,
    ) -> HistoryEntry:
        call = _report(decision_id, credential, status, labels, content, values)
        return cast(HistoryEntry, await self._send(call))

    async def approval(
        self, approval_id: str, *, token: str | None = None, wait: float = 0
    ) -> Approval:
        return cast(Approval, await self._send(_approval(approval_id, token, wait, self.timeout)))

    async def approvals(
        self, approver_token: str, *, status: str = "pending", limit: int | None = None
    ) -> list[Approval]:
        listed = cast(ApprovalList, await self._send(_approvals(approver_token, status, limit)))
        return listed["items"]

    async def approve(self, approval_id: str, approver_token: str, *, reason: str) -> Approval:
        call = _resolve(approval_id, approver_token, "approve", reason)
        return cast(Approval, await self._send(call))

    async def deny(self, approval_id: str, approver_token: str, *, reason: str) -> Approval:
        call = _resolve(approval_id, approver_token, "deny", reason)
        return cast(Approval, await self._send(call))

    async def withdraw(
        self, approval_id: str, *, credential: str | None = None, reason: str | None = None
    ) -> Approval:
        return cast(Approval, await self._send(_withdraw(approval_id, credential, reason)))

    async def exchange_token(
        self, credential: str, *, decision_id: str, resource: str, scope: str | None = None
    ) -> TokenExchanged:
        call = _exchange(credential, decision_id, resource, scope)
        return cast(TokenExchanged, await self._send(call))

    async def receipt(self, decision_id: str) -> ReceiptBundle:
        return cast(ReceiptBundle, await self._send(_receipt(decision_id)))

    async def checkpoint(self) -> CheckpointView:
        return cast(CheckpointView, await self._send(_checkpoint()))

    async def consistency(self, first: int, second: int) -> ConsistencyProof:
        return cast(ConsistencyProof, await self._send(_consistency(first, second)))

    async def health(self) -> JSON:
        return cast(JSON, await self._send(_Call("GET", "/v1/health")))


def _task_body(
    intent: str,
    tools: list[str],
    ttl_seconds: int,
    labels: list[str] | None,
    params: JSON | None,
    max_depth: int,
    prompt: str | None,
    grounded_values: list[str] | None,
) -> JSON:
    body: JSON = {
        "intent": intent,
        "tools": list(tools),
        "ttl_seconds": ttl_seconds,
        "max_depth": max_depth,
    }
    if labels:
        body["labels"] = list(labels)
    if params:
        body["params"] = dict(params)
    if prompt is not None:
        body["prompt"] = prompt
    if grounded_values is not None:
        body["grounded_values"] = list(grounded_values)
    return body


def _delegation_body(
    agent: str, tools: list[str], labels: list[str] | None, ttl_seconds: int | None
) -> JSON:
    body: JSON = {"agent": agent, "tools": list(tools)}
    if labels is not None:
        body["labels"] = list(labels)
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return body

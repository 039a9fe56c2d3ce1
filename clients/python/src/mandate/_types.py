"""The JSON bodies of the HTTP API, as typed dictionaries.

Field names are the server's (docs/http-api.md); answers are returned as
the server sent them, so fields a newer server adds are kept.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias, TypedDict

from typing_extensions import NotRequired

JSON = dict[str, Any]
#: Any JSON value: what a tool returned, as `POST /v1/decisions/{id}/result`'s `content`.
JSONValue: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None
DecisionValue = Literal["allow", "deny", "approval_required"]
#: The kinds of destination a tool's argument names (`mandate/arguments`).
ValueKind = Literal["email", "account", "url", "handle", "phone"]
#: Whether a tool's output is trusted content (`mandate/output`).
OutputTrust = Literal["trusted", "untrusted"]
#: Where a reported value was found in a result.
ValueField = Literal["structured", "text"]


class EvaluationProblem(TypedDict):
    policy: str
    message: str


class Decision(TypedDict):
    """`POST /v1/decide`'s answer."""

    decision: DecisionValue
    decision_id: str
    policies: list[str]
    reasons: list[str]
    errors: list[EvaluationProblem]
    receipt_index: NotRequired[int]
    approval_id: NotRequired[str]
    approval_expires_at: NotRequired[str]
    approver: NotRequired[str]


class TaskStarted(TypedDict):
    """`POST /v1/tasks`'s answer."""

    task_id: str
    credential: str
    expires_at: str
    revocation_id: str


class Delegated(TypedDict):
    """`POST /v1/tasks/{id}/delegate`'s answer."""

    credential: str
    expires_at: str
    revocation_id: str
    depth: int


class CredentialView(TypedDict):
    revocation_id: str
    parent_revocation_id: str | None
    agent: str
    depth: int
    tools: list[str]
    labels: list[str]
    issued_at: str
    expires_at: str
    revoked: bool


class ReportedValue(TypedDict):
    """A destination found in a call's result, as `POST /v1/decisions/{id}/result`
    carries it in `values`: `value` is a value or a list of them separated by
    `,` or `;` (at most 512 bytes); `field` is `structured` when it was the
    whole of a field a system filled (a sender, a participant list) and
    `text` when it was inside free text (a body, a page).

        ReportedValue(value="bob@example.com", field="structured")
    """

    value: str
    field: ValueField


class ResultView(TypedDict):
    status: str
    labels: list[str]
    reported_at: str


class HistoryEntry(TypedDict):
    """One decision of a task's history (also `POST …/result`'s answer)."""

    decision_id: str
    agent: str
    server: str
    tool: str
    decision: DecisionValue
    decided_at: str
    annotations: dict[str, Any] | None
    result: ResultView | None


class TaskView(TypedDict):
    """`GET /v1/tasks/{id}`'s answer."""

    id: str
    agent: str
    on_behalf_of: str | None
    intent: str
    tools: list[str]
    labels: list[str]
    params: dict[str, Any]
    audience: str
    max_depth: int
    created_at: str
    expires_at: str
    state: str
    ended_at: str | None
    end_reason: str | None
    credentials: list[CredentialView]
    history: list[HistoryEntry]


class TaskEnded(TypedDict):
    """`DELETE /v1/tasks/{id}`'s answer."""

    task_id: str
    ended_at: str
    end_reason: str
    revoked: list[str]


class Approval(TypedDict):
    """`GET /v1/approvals/{id}` and the resolutions' answer."""

    id: str
    status: Literal["pending", "approved", "denied", "expired", "used", "withdrawn"]
    decision_id: str
    created_at: str
    expires_at: str
    resolved_at: str | None
    resolved_by: str | None
    reason: str | None
    released_by: NotRequired[str]
    task_id: NotRequired[str]
    summary: NotRequired[dict[str, Any]]
    request_sha256: NotRequired[str]


class ApprovalList(TypedDict):
    items: list[Approval]


class TokenExchanged(TypedDict):
    """`POST /v1/token`'s answer."""

    access_token: str
    issued_token_type: str
    token_type: str
    expires_in: int
    scope: str


class InclusionProof(TypedDict):
    index: int
    tree_size: int
    hashes: list[str]


class ReceiptBundle(TypedDict):
    """`GET /v1/receipts/{decision_id}`'s answer."""

    receipt: dict[str, Any]
    signature: str
    inclusion_proof: InclusionProof
    checkpoint: str
    verifier_key: str


class CheckpointView(TypedDict):
    """`GET /v1/checkpoint`'s JSON answer."""

    size: int
    root: str
    note: str
    verifier_key: str


# `GET /v1/proofs/consistency`'s answer (`from` is a Python keyword).
ConsistencyProof = TypedDict("ConsistencyProof", {"from": int, "to": int, "hashes": list[str]})

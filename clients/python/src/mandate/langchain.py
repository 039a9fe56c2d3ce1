"""LangChain and LangGraph: guard `langchain-core` tools.

    from mandate.langchain import guard_tools

    tools = guard_tools([read_inbox, send_email], server="mail", task=t)
    agent = create_react_agent(model, tools)  # or ToolNode(tools)

Each guarded tool keeps its name, description and argument schema, asks
Mandate before the wrapped tool runs (with the arguments the model gave),
and reports the result. A call Mandate does not allow never reaches the
wrapped tool: it comes back to the model as a tool error naming the reasons
(`ToolException`, with `handle_tool_error` on), so the agent run goes on.

Install with the `langchain` extra (`pip install "mandate-client[langchain]"`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.tools import BaseTool, ToolException
from pydantic import ConfigDict

from ._errors import MandateError, refusal_message
from ._task import Labeller, Task, ToolSpec, current_task, guard_each, jsonable
from ._types import OutputTrust, ValueKind


class MandateTool(BaseTool):
    """A tool that runs `inner` only when Mandate allows the call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool
    spec: ToolSpec
    task: Task | None = None
    handle_tool_error: bool | str | Callable[[ToolException], str] | None = True

    def _task(self) -> Task:
        return self.task if self.task is not None else current_task()

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if args:
            # A tool without a schema takes its single input positionally.
            return {"input": jsonable(args[0] if len(args) == 1 else list(args)), **kwargs}
        return dict(kwargs)

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        tool_input: Any = args[0] if args and not kwargs else kwargs
        try:
            return self._task().call(
                self.spec,
                jsonable(self._arguments(args, kwargs)),
                lambda: self.inner.invoke(tool_input),
            )
        except MandateError as e:
            raise ToolException(refusal_message(e)) from e

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        tool_input: Any = args[0] if args and not kwargs else kwargs

        async def run() -> Any:
            return await self.inner.ainvoke(tool_input)

        try:
            return await self._task().acall(self.spec, jsonable(self._arguments(args, kwargs)), run)
        except MandateError as e:
            raise ToolException(refusal_message(e)) from e


def guard_tool(
    tool: BaseTool,
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
) -> MandateTool:
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
    return MandateTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        inner=tool,
        spec=spec,
        task=task,
    )


def guard_tools(
    tools: Sequence[BaseTool],
    *,
    server: str,
    task: Task | None = None,
    annotations: Mapping[str, Mapping[str, Any]] | None = None,
    untrusted: Iterable[str] = (),
    approval_timeout: float | None = None,
) -> list[MandateTool]:
    """Every tool of `tools`, guarded, all on `server`. `annotations` maps
    a tool's name to its MCP hints and catalog (`mandate/arguments`,
    `mandate/output`, `mandate/textFields`); `untrusted` names the tools
    that return content from outside."""
    return guard_each(
        tools,
        guard_tool,
        lambda tool: tool.name,
        server=server,
        task=task,
        annotations=annotations,
        untrusted=untrusted,
        approval_timeout=approval_timeout,
    )


__all__ = ["MandateTool", "guard_tool", "guard_tools", "refusal_message"]

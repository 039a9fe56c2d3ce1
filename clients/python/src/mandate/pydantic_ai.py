"""Pydantic AI: guard tool functions and `Tool`s.

    from mandate.pydantic_ai import guard_tool

    agent = Agent(model, tools=[guard_tool(read_inbox, server="mail", task=t)])

A guarded tool keeps its function's name, signature and docstring (so its
schema is the same), asks Mandate before the function runs, with the
arguments the model gave, and reports the result. A call Mandate does not
allow never runs: the model receives the refusal, with the reasons, as the
tool's return value, and the run goes on.

Install with the `pydantic-ai` extra (`pip install "mandate-client[pydantic-ai]"`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from pydantic_ai import Tool

from ._errors import MandateError, refusal_message
from ._task import Labeller, Task, ToolSpec, call_arguments, current_task
from ._types import OutputTrust, ValueKind


def _guard_function(
    function: Callable[..., Any], spec: ToolSpec, task: Task | None, takes_ctx: bool
) -> Callable[..., Any]:
    # The run context is the framework's, not the call's.
    skip = [next(iter(inspect.signature(function).parameters))] if takes_ctx else []

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return call_arguments(function, args, kwargs, skip)

    if inspect.iscoroutinefunction(function):
        coroutine = cast(Callable[..., Awaitable[Any]], function)

        @functools.wraps(function)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await (task or current_task()).acall(
                    spec, arguments(args, kwargs), lambda: coroutine(*args, **kwargs)
                )
            except MandateError as e:
                return refusal_message(e)

        return guarded_async

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return (task or current_task()).call(
                spec, arguments(args, kwargs), lambda: function(*args, **kwargs)
            )
        except MandateError as e:
            return refusal_message(e)

    return guarded


def guard_tool(
    tool: Tool[Any] | Callable[..., Any],
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
) -> Tool[Any]:
    """`tool` (a `Tool` or a plain function), guarded: decided as
    `server`/`name` (default: the tool's name) under `task` (default: the
    task active when it is called). A function whose first parameter is a
    `RunContext` is passed one, as Pydantic AI does. The other parameters
    are `mandate.ToolSpec`'s: MCP hints, the catalog (`destinations`,
    `output`, `text_fields`) and how results are reported."""
    if not isinstance(tool, Tool):
        tool = Tool(tool)
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
    return Tool(
        _guard_function(tool.function, spec, task, tool.takes_ctx),
        takes_ctx=tool.takes_ctx,
        max_retries=tool.max_retries,
        name=tool.name,
        description=tool.description,
    )


__all__ = ["guard_tool"]

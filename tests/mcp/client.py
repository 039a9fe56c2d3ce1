"""An MCP client built on the official Python SDK (`mcp` on PyPI), driven by
a JSON plan, for the Mandate MCP gateway tests.

    python3 client.py PLAN_JSON stdio COMMAND [ARGS...]
    python3 client.py PLAN_JSON http URL
    python3 client.py PLAN_JSON sessions

Over HTTP, MCP_TEST_HEADERS (a JSON object) adds headers to every request,
as a deployment sets a proxy token.

The plan is a list of steps; each step's outcome is printed as one JSON
object on stdout when the plan is done ({"server": ..., "steps": [...]}).
Steps:

    {"op": "list_tools"}
    {"op": "call", "tool": NAME, "arguments": {...}, "progress": bool, "meta": {...}}
    {"op": "list_resources"} / {"op": "read_resource", "uri": URI}
    {"op": "list_prompts"} / {"op": "get_prompt", "name": NAME, "arguments": {...}}

With `sessions`, the plan is an agent with several MCP servers at once: it
opens and closes named client sessions itself, and every other step names
the session it runs on ("session": NAME). The output is {"steps": [...]},
each record with its "session".

    {"op": "open", "session": NAME, "stdio": [COMMAND, ARGS...]}
    {"op": "open", "session": NAME, "http": URL}
    {"op": "close", "session": NAME}     (a stdio server process is ended)
    {"op": "repeat", "times": N, "steps": [...]}
                                         (the steps N times, back to back;
                                          each record gets its "iteration")

A step's "label", if any, is copied to its record, for the test to find it.

A step that fails records "exception" and, for a JSON-RPC error answer,
its "code" and "message". "list_tools" also records each tool's
annotations, by tool name; "call" records the result's `_meta` ("meta",
null when it has none), where the gateway puts its decision.

The client answers sampling requests from the server (through the gateway)
with a fixed message, so that sampling is exercised in both directions.
"""

import asyncio
import contextlib
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SAMPLED = "sampled by the python test client"


async def sampling(context, params):
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=SAMPLED),
        model="test-model",
        stop_reason="endTurn",
    )


def field(obj, *names):
    """An attribute under its SDK 2.x (snake_case) or 1.x (camelCase) name."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(names[0])


def texts(content):
    return [c.text for c in content if getattr(c, "type", None) == "text"]


async def run_step(session, step):
    """Runs one step on `session` and returns its record."""
    op = step["op"]
    record = {"op": op}
    try:
        if op == "list_tools":
            result = await session.list_tools()
            record["tools"] = [t.name for t in result.tools]
            record["annotations"] = {
                t.name: t.annotations.model_dump(by_alias=True, exclude_none=True)
                for t in result.tools
                if t.annotations is not None
            }
        elif op == "call":
            progress = []

            async def on_progress(value, total, message):
                progress.append(value)

            result = await session.call_tool(
                step["tool"],
                step.get("arguments", {}),
                progress_callback=on_progress if step.get("progress") else None,
                meta=step.get("meta"),
            )
            record.update(
                tool=step["tool"],
                isError=bool(field(result, "is_error", "isError")),
                text="\n".join(texts(result.content)),
                progress=progress,
                meta=result.meta,
            )
        elif op == "list_resources":
            result = await session.list_resources()
            record["uris"] = [str(r.uri) for r in result.resources]
        elif op == "read_resource":
            result = await session.read_resource(step["uri"])
            record["contents"] = len(result.contents)
        elif op == "list_prompts":
            result = await session.list_prompts()
            record["prompts"] = [p.name for p in result.prompts]
        elif op == "get_prompt":
            result = await session.get_prompt(step["name"], step.get("arguments", {}))
            record["messages"] = len(result.messages)
        else:
            raise ValueError(f"unknown op {op}")
    except Exception as e:  # the outcome is what the test asserts
        record["exception"] = f"{type(e).__name__}: {e}"
        error = getattr(e, "error", None)  # McpError: the JSON-RPC error
        if getattr(error, "code", None) is not None:
            record["code"] = error.code
            record["message"] = error.message
    return record


async def run_plan(session, plan):
    init = await session.initialize()
    out = {"server": field(init, "server_info", "serverInfo").name, "steps": []}
    for step in plan:
        out["steps"].append(await run_step(session, step))
    return out


@contextlib.asynccontextmanager
async def connect(mode, target):
    """A client session (not yet initialized) on a stdio command or a URL."""
    async with contextlib.AsyncExitStack() as stack:
        if mode == "stdio":
            params = StdioServerParameters(command=target[0], args=target[1:])
            read, write = await stack.enter_async_context(stdio_client(params))
        else:
            headers = json.loads(os.environ.get("MCP_TEST_HEADERS", "{}"))
            # The SDK's own client (its timeouts), with the extra headers.
            http = await stack.enter_async_context(
                create_mcp_http_client(headers=headers)
            )
            streams = await stack.enter_async_context(
                streamable_http_client(target, http_client=http)
            )
            read, write = streams[0], streams[1]
        yield await stack.enter_async_context(
            ClientSession(read, write, sampling_callback=sampling)
        )


class Opened:
    """A named session of the `sessions` mode, held by a task of its own so
    that sessions can be closed in any order (the SDK's transports must be
    left by the task that entered them)."""

    def __init__(self, mode, target):
        self.mode, self.target = mode, target
        self.session = None
        self.server = None
        self.error = None
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()
        self.task = asyncio.create_task(self.hold())

    async def hold(self):
        try:
            async with connect(self.mode, self.target) as session:
                init = await session.initialize()
                self.server = field(init, "server_info", "serverInfo").name
                self.session = session
                self.ready.set()
                await self.closing.wait()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ready.set()

    async def close(self):
        self.closing.set()
        await self.task


async def run_sessions(plan):
    opened = {}
    out = {"steps": []}

    async def run(steps, iteration=None):
        for step in steps:
            op = step["op"]
            if op == "repeat":
                for i in range(step["times"]):
                    await run(step["steps"], i)
                continue
            name = step.get("session")
            if op == "open":
                mode = "stdio" if "stdio" in step else "http"
                held = Opened(mode, step[mode])
                await held.ready.wait()
                record = {"op": op}
                if held.error is not None:
                    record["exception"] = held.error
                else:
                    opened[name] = held
                    record["server"] = held.server
            elif op == "close":
                await opened.pop(name).close()
                record = {"op": op}
            elif name not in opened:
                record = {"op": op, "exception": f"no open session {name!r}"}
            else:
                record = await run_step(opened[name].session, step)
            record["session"] = name
            if "label" in step:
                record["label"] = step["label"]
            if iteration is not None:
                record["iteration"] = iteration
            out["steps"].append(record)

    try:
        await run(plan)
    finally:
        for held in opened.values():
            await held.close()
    return out


async def main():
    plan = json.loads(sys.argv[1])
    mode = sys.argv[2]
    if mode == "sessions":
        out = await run_sessions(plan)
    elif mode in ("stdio", "http"):
        target = sys.argv[3:] if mode == "stdio" else sys.argv[3]
        async with connect(mode, target) as session:
            out = await run_plan(session, plan)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

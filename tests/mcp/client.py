"""An MCP client built on the official Python SDK (`mcp` on PyPI), driven by
a JSON plan, for the Mandate MCP gateway tests.

    python3 client.py PLAN_JSON stdio COMMAND [ARGS...]
    python3 client.py PLAN_JSON http URL

Over HTTP, MCP_TEST_HEADERS (a JSON object) adds headers to every request,
as a deployment sets a proxy token.

The plan is a list of steps; each step's outcome is printed as one JSON
object on stdout when the plan is done ({"server": ..., "steps": [...]}).
Steps:

    {"op": "list_tools"}
    {"op": "call", "tool": NAME, "arguments": {...}, "progress": bool}
    {"op": "list_resources"} / {"op": "read_resource", "uri": URI}
    {"op": "list_prompts"} / {"op": "get_prompt", "name": NAME, "arguments": {...}}

A step that fails records "exception" and, for a JSON-RPC error answer,
its "code" and "message". "list_tools" also records each tool's
annotations, by tool name.

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


async def run_plan(session, plan):
    init = await session.initialize()
    out = {"server": field(init, "server_info", "serverInfo").name, "steps": []}
    for step in plan:
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
                )
                record.update(
                    tool=step["tool"],
                    isError=bool(field(result, "is_error", "isError")),
                    text="\n".join(texts(result.content)),
                    progress=progress,
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
        out["steps"].append(record)
    return out


async def main():
    plan = json.loads(sys.argv[1])
    mode = sys.argv[2]
    if mode == "stdio":
        params = StdioServerParameters(command=sys.argv[3], args=sys.argv[4:])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, sampling_callback=sampling) as session:
                out = await run_plan(session, plan)
    elif mode == "http":
        headers = json.loads(os.environ.get("MCP_TEST_HEADERS", "{}"))
        async with contextlib.AsyncExitStack() as stack:
            # The SDK's own client (its timeouts), with the extra headers.
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            streams = await stack.enter_async_context(streamable_http_client(sys.argv[3], http_client=http))
            read, write = streams[0], streams[1]
            session = await stack.enter_async_context(ClientSession(read, write, sampling_callback=sampling))
            out = await run_plan(session, plan)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""The MCP quick start's agent (README, "MCP quick start").

The official MCP Python SDK starts the reference filesystem server behind
`mandate mcp wrap`, which asks the Mandate server at 127.0.0.1:8181 (or
MANDATE_GATEWAY) about every tools/call, and makes three calls: one the
task declared (allowed), one it did not (denied), and one that changes a
file (held until a person approves it, or denied when nobody does).

    python examples/mcp/agent.py [NOTES_DIR] [-- SERVER_COMMAND...]

NOTES_DIR defaults to ./notes. The server command defaults to the
reference filesystem server through npx; the directory is added after it.
"""

import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

HERE = os.path.dirname(os.path.abspath(__file__))
FILESYSTEM_SERVER = ["npx", "-y", "@modelcontextprotocol/server-filesystem@2026.8.31"]


def wrapped(notes: str, server: list[str]) -> StdioServerParameters:
    """The filesystem server serving `notes`, behind Mandate."""
    return StdioServerParameters(
        command="mandate",
        args=[
            "mcp", "wrap",
            "--agent", "spiffe://example.org/agent/notes",  # agent mode: no credential, no JWT
            "--config", os.path.join(HERE, "mcp.toml"),     # the task: intent and tools
            "--name", "fs",                                 # the server's name in decisions
            "--", *server, notes,
        ],
        # The SDK passes the server a minimal environment; MANDATE_GATEWAY
        # (and the PATH that finds npx) come from ours.
        env=dict(os.environ),
    )


async def call(session: ClientSession, tool: str, arguments: dict, note: str = "") -> None:
    print(f"{tool}:{note}", flush=True)
    result = await session.call_tool(tool, arguments)
    text = " ".join(c.text for c in result.content if c.type == "text")
    print(f"  {'refused' if result.is_error else 'ok'}: {text}", flush=True)


async def main() -> None:
    args = sys.argv[1:]
    server = FILESYSTEM_SERVER
    if "--" in args:
        server = args[args.index("--") + 1 :]
        args = args[: args.index("--")]
    notes = os.path.abspath(args[0] if args else "notes")
    todo = os.path.join(notes, "todo.md")

    async with stdio_client(wrapped(notes, server)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            # Declared by the task and read-only: allowed.
            await call(session, "list_directory", {"path": notes})
            # Not declared by the task: denied, and it never reaches the server.
            await call(session, "write_file", {"path": todo, "content": "gone\n"})
            # Declared, but it overwrites data: held until a person answers.
            edit = {"path": todo, "edits": [{"oldText": "milk", "newText": "oat milk"}]}
            await call(session, "edit_file", edit, " waiting for a person (mandate approvals list)")


if __name__ == "__main__":
    asyncio.run(main())

"""The reference fetch server (`mcp-server-fetch` on PyPI) over streamable
HTTP on 127.0.0.1, for the Mandate MCP proxy tests.

    python3 fetch_http.py PORT

The package itself runs only over stdio (`python3 -m mcp_server_fetch`).
This serves the very server it builds (`create_server`: its one `fetch`
tool, annotated read-only and open-world, and its robots.txt check) with
the SDK's streamable HTTP transport instead, with sessions and SSE answers,
and with `--allow-private-ips` so that it fetches the test's loopback site.
"""

import sys

from mcp_server_fetch.server import create_server

server = create_server(allow_private_ips=True)
server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))

// An MCP client built on the official TypeScript SDK
// (@modelcontextprotocol/sdk), driven by a JSON plan, for the Mandate MCP
// gateway tests. Same plan and output as client.py:
//
//   node client.mjs PLAN_JSON stdio COMMAND [ARGS...]
//   node client.mjs PLAN_JSON http URL
//
// Besides the steps of client.py it knows {"op": "raw", "message": {...}}
// (HTTP only): POSTs one message as it is, in the client's session, and
// records the HTTP status and the JSON-RPC answer, to check how the gateway
// answers malformed or hostile messages; and {"op": "terminate"} (HTTP
// only): ends the session with DELETE, then records the HTTP status of a
// ping sent with the old session id. A step that fails records
// "exception" and, for a JSON-RPC error answer, its "code". As in
// client.py, "call" records the result's `_meta` as "meta" (null without).

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const SAMPLED = "sampled by the node test client";

const [planText, mode, ...rest] = process.argv.slice(2);
const plan = JSON.parse(planText);

const client = new Client(
  { name: "mandate-node-test", version: "1.0.0" },
  { capabilities: { sampling: {} } },
);
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  role: "assistant",
  content: { type: "text", text: SAMPLED },
  model: "test-model",
  stopReason: "endTurn",
}));

let transport;
if (mode === "stdio") {
  transport = new StdioClientTransport({ command: rest[0], args: rest.slice(1), stderr: "inherit" });
} else if (mode === "http") {
  // MCP_TEST_HEADERS (a JSON object): headers for every request, as a
  // deployment sets a proxy token.
  const headers = JSON.parse(process.env.MCP_TEST_HEADERS ?? "{}");
  transport = new StreamableHTTPClientTransport(new URL(rest[0]), { requestInit: { headers } });
} else {
  throw new Error(`unknown mode ${mode}`);
}

const texts = (content) => (content ?? []).filter((c) => c.type === "text").map((c) => c.text);

await client.connect(transport);
const out = { server: client.getServerVersion()?.name, steps: [] };
for (const step of plan) {
  const record = { op: step.op };
  try {
    switch (step.op) {
      case "list_tools": {
        const result = await client.listTools();
        record.tools = result.tools.map((t) => t.name);
        record.annotations = Object.fromEntries(
          result.tools.filter((t) => t.annotations).map((t) => [t.name, t.annotations]),
        );
        break;
      }
      case "call": {
        const progress = [];
        const options = step.progress ? { onprogress: (p) => progress.push(p.progress) } : undefined;
        const result = await client.callTool({ name: step.tool, arguments: step.arguments ?? {} }, undefined, options);
        Object.assign(record, {
          tool: step.tool,
          isError: Boolean(result.isError),
          text: texts(result.content).join("\n"),
          progress,
          meta: result._meta ?? null,
        });
        break;
      }
      case "list_resources": {
        const result = await client.listResources();
        record.uris = result.resources.map((r) => r.uri);
        break;
      }
      case "read_resource": {
        const result = await client.readResource({ uri: step.uri });
        record.contents = result.contents.length;
        break;
      }
      case "list_prompts": {
        const result = await client.listPrompts();
        record.prompts = result.prompts.map((p) => p.name);
        break;
      }
      case "get_prompt": {
        const result = await client.getPrompt({ name: step.name, arguments: step.arguments ?? {} });
        record.messages = result.messages.length;
        break;
      }
      case "raw": {
        const headers = {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": transport.protocolVersion ?? "2025-06-18",
        };
        if (transport.sessionId) headers["mcp-session-id"] = transport.sessionId;
        const body = typeof step.message === "string" ? step.message : JSON.stringify(step.message);
        const response = await fetch(rest[0], { method: "POST", headers, body });
        record.status = response.status;
        const text = await response.text();
        try {
          record.answer = JSON.parse(text);
        } catch {
          record.answer = text;
        }
        break;
      }
      case "terminate": {
        // Ends the session (DELETE), then POSTs a ping with the old session
        // id: the server must no longer know it.
        const old = transport.sessionId;
        await transport.terminateSession();
        const response = await fetch(rest[0], {
          method: "POST",
          headers: {
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            "mcp-session-id": old,
          },
          body: JSON.stringify({ jsonrpc: "2.0", id: "after-delete", method: "ping" }),
        });
        record.status = response.status;
        await response.text();
        break;
      }
      default:
        throw new Error(`unknown op ${step.op}`);
    }
  } catch (e) {
    record.exception = `${e?.name}: ${e?.message}`;
    if (typeof e?.code === "number") record.code = e.code;
  }
  out.steps.push(record);
}
await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);

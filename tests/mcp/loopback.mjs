// Loaded into a Node process with `--import` (NODE_OPTIONS), so that a
// server it starts with only a port listens on 127.0.0.1 instead of every
// interface. supergateway 4.0.0 has no flag for its address, and calls
// `listen(port)`: without this, its bridge to a stdio MCP server is open to
// the network, and whatever reaches it bypasses Mandate. docs/mcp.md shows
// this file; the MCP tests start supergateway with it.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const [first] = args;
  if (first === undefined || typeof first === "function") {
    args.unshift(0, "127.0.0.1");
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  } else if (first && typeof first === "object" && first.host === undefined &&
             first.path === undefined && first.fd === undefined && first._handle === undefined) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};

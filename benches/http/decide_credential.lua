-- wrk script: POST /v1/decide under a task credential (MANDATE_CREDENTIAL),
-- rotating through two allowed calls and a denied one of the task started by
-- benches/http_credential_load.sh (summary.lua counts non-200s).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MANDATE_CREDENTIAL")

local agent = [["principal": {"id": "spiffe://example.org/agent/planner"}]]
local bodies = {
  "{" .. agent .. [[, "action": {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true, "openWorldHint": false}}, "arguments": {"folder": "inbox"}}]],
  "{" .. agent .. [[, "action": {"server": "mail", "tool": "send_email", "annotations": {"destructiveHint": false, "openWorldHint": false}}, "arguments": {"to": "carol@example.com", "body": "hi"}}]],
  "{" .. agent .. [[, "action": {"server": "mail", "tool": "send_email", "annotations": {"destructiveHint": false, "openWorldHint": false}}, "arguments": {"to": "mallory@evil.example", "body": "hi"}}]],
}
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

dofile("benches/http/summary.lua")

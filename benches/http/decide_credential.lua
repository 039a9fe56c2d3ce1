-- wrk script: POST /v1/decide under a task credential (MANDATE_CREDENTIAL),
-- rotating through two allowed calls and a denied one of the task started by
-- benches/http_credential_load.sh (summary.lua counts non-200s).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MANDATE_CREDENTIAL")

local agent = [["principal": {"id": "spiffe://example.org/agent/planner"}]]
-- BENCH_DECLARE=1: `to` is a declared e-mail destination, so each send
-- computes its provenance against the task's grounds.
local send = [["destructiveHint": false, "openWorldHint": false]]
if os.getenv("BENCH_DECLARE") == "1" then
  send = send .. [[, "mandate/arguments": {"to": "email"}]]
end
local bodies = {
  "{" .. agent .. [[, "action": {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true, "openWorldHint": false}}, "arguments": {"folder": "inbox"}}]],
  "{" .. agent .. [[, "action": {"server": "mail", "tool": "send_email", "annotations": {]] .. send .. [[}}, "arguments": {"to": "carol@example.com", "body": "hi"}}]],
  "{" .. agent .. [[, "action": {"server": "mail", "tool": "send_email", "annotations": {]] .. send .. [[}}, "arguments": {"to": "mallory@evil.example", "body": "hi"}}]],
}
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

dofile("benches/http/summary.lua")

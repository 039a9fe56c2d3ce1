-- wrk script: POST /v1/decide, rotating through an allow, a deny and an
-- approval_required request on the example pack (summary.lua counts non-200s).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local task = [["context": {"task": {"intent": "answer customer questions", "tools": ["read_inbox", "send_email", "delete_email"], "params": {"allowed_recipients": ["carol@example.com"]}}}]]
local bodies = {
  [[{"principal": {"id": "spiffe://example.org/agent/mailer"}, "action": {"server": "mail", "tool": "read_inbox", "annotations": {"readOnlyHint": true, "openWorldHint": false}}, "arguments": {"folder": "inbox"}, ]] .. task .. "}",
  [[{"principal": {"id": "spiffe://example.org/agent/mailer"}, "action": {"server": "mail", "tool": "send_email", "annotations": {"destructiveHint": false}}, "arguments": {"to": "mallory@evil.example", "body": "hi"}, ]] .. task .. "}",
  [[{"principal": {"id": "spiffe://example.org/agent/mailer"}, "action": {"server": "mail", "tool": "delete_email", "annotations": {"destructiveHint": true}}, "arguments": {"id": "m-1"}, ]] .. task .. "}",
}
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

dofile("benches/http/summary.lua")

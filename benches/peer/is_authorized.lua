-- wrk script for benches/peer_cedar_agent.sh: POST /v1/is_authorized to
-- cedar-agent, alternating an allow (read_inbox) and a deny (send_email to a
-- recipient the task does not allow). A plain Cedar server keeps no tasks or
-- sessions, so the caller sends the context Mandate would have built for the
-- same calls in benches/http/decide.lua; the tools are in entities.json.
-- SUMMARY comes from benches/http/summary.lua, as for the Mandate benches;
-- DECISIONS counts answers that are not the expected Allow (declared-tools)
-- or Deny (recipient-allowed), without errors.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function call(tool, arguments)
  return [[{"principal": "Mandate::Agent::\"spiffe://example.org/agent/mailer\"", ]]
    .. [["action": "Mandate::Action::\"call_tool\"", "resource": "Mandate::Tool::\"mail/]] .. tool .. [[\"", ]]
    .. [["context": {"task": {"intent": "answer customer questions", "tools": ["read_inbox", "send_email", "delete_email"], ]]
    .. [["labels": [], "params": {"allowed_recipients": ["carol@example.com"]}, "depth": 0}, ]]
    .. [["session": {"labels": [], "first_use_of_tool": true}, "arguments": ]] .. arguments .. [[, ]]
    .. [["provenance": {"declared": [], "worst": "none"}, "amounts": {"declared": false}}}]]
end
local bodies = {
  call("read_inbox", [[{"folder": "inbox"}]]),
  call("send_email", [[{"to": "mallory@evil.example", "body": "hi"}]]),
}
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

dofile("benches/http/summary.lua")

allows, denies, unexpected = 0, 0, 0
local count_status = response
response = function(status, headers, body)
  count_status(status, headers, body)
  local clean = body:find('"errors":[]', 1, true)
  if clean and body:find('"decision":"Allow"', 1, true) and body:find('"declared-tools"', 1, true) then
    allows = allows + 1
  elseif clean and body:find('"decision":"Deny"', 1, true) and body:find('"recipient-allowed"', 1, true) then
    denies = denies + 1
  else
    unexpected = unexpected + 1
    if unexpected == 1 then io.stderr:write("unexpected answer: " .. status .. " " .. body .. "\n") end
  end
end

local threads = {}
setup = function(thread) table.insert(threads, thread) end

local print_summary = done
done = function(summary, latency, requests)
  print_summary(summary, latency, requests)
  local a, d, u = 0, 0, 0
  for _, t in ipairs(threads) do
    a, d, u = a + t:get("allows"), d + t:get("denies"), u + t:get("unexpected")
  end
  io.write(string.format("DECISIONS allow=%d deny=%d unexpected=%d\n", a, d, u))
end

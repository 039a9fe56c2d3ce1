-- wrk script: POST /v1/decide under a task credential (MANDATE_CREDENTIAL),
-- rotating through two allowed calls and a denied one of the task started by
-- benches/http_credential_load.sh, and counting non-200s.
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

local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("SUMMARY requests=%d rps=%.0f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    (summary.errors.status or 0), summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

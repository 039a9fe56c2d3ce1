-- Shared by the wrk scripts here (loaded with dofile from the repository's
-- root, where the bench scripts run wrk): counts non-200 answers and prints
-- one SUMMARY line per run.
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

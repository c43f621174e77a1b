-- wrk script: POST the body in $BENCH_BODY_FILE as JSON; at the end print one JSON line with
-- throughput, latency percentiles (microseconds) and errors, prefixed "WRK_JSON ".
-- With $BENCH_TOKENS_FILE (one pre-signed JWT a line, bench/run.py signs them before the clock
-- starts), every request carries the next token as its bearer token: a fresh jti per request, as an
-- EHR signs them. Past the last token it starts over, and the server refuses the replays (401s,
-- which bench/run.py reports as errors): run.py signs more tokens than the run can send.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.path = os.getenv("BENCH_PATH") or "/cds-services/hematotox-order-select"

local tokens = {}
local tokens_file = os.getenv("BENCH_TOKENS_FILE")
if tokens_file and tokens_file ~= "" then
  for line in io.lines(tokens_file) do
    if line ~= "" then tokens[#tokens + 1] = line end
  end
end
local next_token = 0

if #tokens > 0 then
  request = function()
    next_token = next_token % #tokens + 1
    wrk.headers["Authorization"] = "Bearer " .. tokens[next_token]
    return wrk.format()
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,' ..
    '"max":%d,"mean":%.1f,"stdev":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean, latency.stdev,
    e.connect, e.read, e.write, e.status, e.timeout))
end

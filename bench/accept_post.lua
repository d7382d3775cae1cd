-- wrk script for bench/accept.py: POSTs one fixed body (the file named by
-- WRK_BODY) with the bench token, and prints a one-line JSON summary that
-- accept.py reads (wrk's own text summary is meant for people).
-- With WRK_BODIES=N it takes turns over the files WRK_BODY.1 .. WRK_BODY.N, so
-- the gateway's cache of parsed phone numbers does not see one body's 100
-- numbers over and over.
local function read(path)
   local f = assert(io.open(path, "rb"))
   local body = f:read("*a")
   f:close()
   return body
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WRK_TOKEN")

local bodies = {}
local count = tonumber(os.getenv("WRK_BODIES") or "0")
if count > 0 then
   for i = 1, count do
      bodies[i] = read(os.getenv("WRK_BODY") .. "." .. i)
   end
else
   wrk.body = read(os.getenv("WRK_BODY"))
end
local turn = 0

function request()
   if count == 0 then
      return wrk.format()
   end
   turn = turn % count + 1
   return wrk.format(nil, nil, nil, bodies[turn])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
         .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, '
         .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end

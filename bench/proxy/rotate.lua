-- rotate.lua - wrk script for the proxy benchmark: GET / with a Client-ID
-- header rotating over N_CLIENTS fixed values (bench-c00000 ...), the same
-- sequence in every run so every contender sees the same keys in the same
-- order. Requests are formatted once in init(): the load generator shares a
-- CPU with the backend, so it must not spend time building strings.
-- done() prints one "WRKJSON {...}" line the driver parses (latency in µs).

local n_clients = tonumber(os.getenv("BENCH_CLIENTS") or "10000")
local requests_by_key = {}
local next_key = 0
local thread_count = 0

function setup(thread)
   -- Threads start at different keys so that with -t > 1 they do not send
   -- the same key at the same moment.
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
end

function init(args)
   for k = 0, n_clients - 1 do
      requests_by_key[k + 1] = wrk.format("GET", "/", {
         ["Host"] = "bench.local",
         ["Client-ID"] = string.format("bench-c%05d", k),
      })
   end
   next_key = ((thread_index or 0) * 7919) % n_clients
end

function request()
   next_key = next_key + 1
   if next_key > n_clients then
      next_key = 1
   end
   return requests_by_key[next_key]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"non2xx": %d, "err_connect": %d, "err_read": %d, "err_write": %d, ' ..
      '"err_timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.status,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50.0), latency:percentile(99.0), latency.max))
end

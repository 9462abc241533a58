-- Every request carries the next line of BENCH_LINES_FILE: "Header: value" pairs separated by tabs.
-- Each wrk thread starts at a different offset, so no two threads send the same line together.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local lines = {}
for line in io.lines(os.getenv("BENCH_LINES_FILE")) do
  lines[#lines + 1] = line
end
local method, body = os.getenv("BENCH_METHOD") or "GET", os.getenv("BENCH_BODY")
local next_line = 1
local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  next_line = 1 + (offset * 7919) % #lines
end

function request()
  local headers = {}
  for pair in string.gmatch(lines[next_line], "[^\t]+") do
    local name, value = string.match(pair, "^([^:]+): (.*)$")
    headers[name] = value
  end
  if body then
    headers["Content-Type"] = "application/json"
  end
  next_line = next_line % #lines + 1
  return wrk.format(method, nil, headers, body)
end

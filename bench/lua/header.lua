-- The same request every time, with one optional header from the environment (a warm token).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local name, value = os.getenv("BENCH_HEADER_NAME"), os.getenv("BENCH_HEADER_VALUE")
if name and name ~= "" then
  wrk.headers[name] = value
end

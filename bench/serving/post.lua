-- wrk script: POST JSON bodies cycled from the file named by $WRK_BODY_FILE, one body per
-- line (a file of one line sends that body every time). Each wrk thread has its own Lua
-- state: init() builds every whole request once, request() only returns the next one, and
-- the threads start at different places of the pool.
local threads = 0

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local requests = {}
local count, at = 0, 0

function init(args)
  local name = os.getenv("WRK_BODY_FILE")
  local f = assert(io.open(name, "rb"))
  for line in f:lines() do
    if #line > 0 then
      count = count + 1
      requests[count] = wrk.format(nil, nil, nil, line)
    end
  end
  f:close()
  assert(count > 0, "no body in " .. name)
  at = ((thread_index or 0) * 7919) % count
end

function request()
  at = at % count + 1
  return requests[at]
end

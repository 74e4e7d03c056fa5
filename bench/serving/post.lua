-- wrk script: POST the JSON body read from the file named by $WRK_BODY_FILE.
-- Runs once per wrk thread (each has its own Lua state).
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

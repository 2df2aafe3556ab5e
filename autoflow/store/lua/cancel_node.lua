-- ARGV: node, token, (unused), retention_ms, nlogs, logs... Running -> cancelled.
local node, token = ARGV[1], ARGV[2]
local s = held(node, token)
if not s then return {0} end
load_run()
local now = server_now()
add_logs(6, tonumber(ARGV[5]))
cancel_node(node, s, now)
local fin = maybe_finish(now, ARGV[4])
save()
return reply(fin, {})

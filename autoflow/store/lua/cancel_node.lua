-- ARGV: node, token, now, retention_ms, nlogs, logs... Running -> cancelled.
local node, token, now = ARGV[1], ARGV[2], server_now()
if not held(node, token) then return {0} end
push_logs(6, tonumber(ARGV[5]))
cancel_node(node, now)
return {1, maybe_finish(now, ARGV[4])}

-- ARGV: node, token, (unused), retention_ms, nlogs, logs... Running -> cancelled.
local node = ARGV[1]
local s, now = settling(5)
if not s then return {0} end
cancel_node(node, s, now)
local fin = maybe_finish(now, ARGV[4])
save()
return reply(fin, {})

-- ARGV: node, token, child run id, nlogs, logs... The node now waits for its sub-workflow
-- run, holding no worker (no lease); cancelling the run ends it at once.
local node, token = ARGV[1], ARGV[2]
local s = held(node, token)
if not s then return {0} end
add_logs(5, tonumber(ARGV[4]))
s[OWN] = '@sub:' .. ARGV[3]
s[CHILD] = ARGV[3]
put(node, s)
redis.call('ZREM', K.lease, node)
save()
return {1, '', 0, 0, 0}

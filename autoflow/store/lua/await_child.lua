-- ARGV: node, token, child run id, nlogs, logs... The node now waits for its sub-workflow
-- run, holding no worker (no lease); cancelling the run ends it at once.
local node, token = ARGV[1], ARGV[2]
if not held(node, token) then return {0} end
push_logs(5, tonumber(ARGV[4]))
redis.call('HSET', K.own, node, '@sub:' .. ARGV[3])
redis.call('ZREM', K.lease, node)
redis.call('HSET', K.tm, node .. '|c', ARGV[3])
return {1, ''}

-- ARGV: node, token, output, now, retention_ms, nlogs, logs... Running -> completed.
local node, token, now = ARGV[1], ARGV[2], ARGV[4]
if not held(node, token) then return {0} end
redis.call('HSET', K.st, node, 'completed')
redis.call('HSET', K.out, node, ARGV[3])
redis.call('HDEL', K.err, node)
release(node, now)
redis.call('HINCRBY', K.run, 'running', -1)
redis.call('HINCRBY', K.run, 'remaining', -1)
redis.call('HINCRBY', K.run, 'n_ok', 1)
push_logs(7, tonumber(ARGV[6]))
local res = {1, ''}
settle(node, 'ok', now, res)
res[2] = maybe_finish(now, ARGV[5])
return res

-- ARGV: node, token, output, now, retention_ms, nlogs, logs... Running -> completed.
local node, token, now = ARGV[1], ARGV[2], server_now()
if not held(node, token) then return {0} end
push_logs(7, tonumber(ARGV[6]))
redis.call('HSET', K.st, node, 'completed')
redis.call('HSET', K.out, node, ARGV[3])
redis.call('HDEL', K.err, node)
release(node, now)
local res = {1, ''}
local m = map_of(node)
if m then
  redis.call('HINCRBY', K.run, 'running', -1)
  item_done(m, now, res)
else
  completed(node, now, res)
end
res[2] = maybe_finish(now, ARGV[5])
return res

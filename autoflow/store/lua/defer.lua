-- ARGV: node, token, until, waiting ('1': a durable delay, '0': a rate-limit pause), nlogs, logs...
-- Running -> waiting/queued until `until`, holding no worker; the message comes back then.
local node, token, until_ = ARGV[1], ARGV[2], ARGV[3]
if not held(node, token) then return {0} end
push_logs(6, tonumber(ARGV[5]))
if ARGV[4] == '1' then
  redis.call('HSET', K.st, node, 'waiting')
  redis.call('HSET', K.tm, node .. '|w', until_)
else
  redis.call('HSET', K.st, node, 'queued')
end
redis.call('HDEL', K.own, node)
redis.call('ZREM', K.lease, node)
redis.call('ZADD', K.due, until_, node)
redis.call('HINCRBY', K.run, 'running', -1)
redis.call('HINCRBY', K.run, 'queued', 1)
local res = {1, ''}
ready(res, node, num(redis.call('HGET', K.att, node)), until_)
return res

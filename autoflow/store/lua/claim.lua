-- ARGV: node, attempt, token, lease_until, now, log. Queued/retrying -> running.
local node, attempt, token, until_, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local st = redis.call('HGET', K.st, node)
if st ~= 'queued' and st ~= 'retrying' then return false end
if num(redis.call('HGET', K.att, node)) ~= attempt then return false end
local r = redis.call('HMGET', K.run, 'status', 'cancel', 'workflow', 'digest', 'inputs')
if r[1] ~= 'running' or r[2] == '1' then return false end
redis.call('HSET', K.st, node, 'running')
redis.call('HSET', K.own, node, token)
redis.call('ZADD', K.lease, until_, node)
redis.call('ZREM', K.due, node)
redis.call('HSET', K.tm, node .. '|s', now)
redis.call('HDEL', K.tm, node .. '|f')
redis.call('HINCRBY', K.run, 'running', 1)
redis.call('HINCRBY', K.run, 'queued', -1)
redis.call('RPUSH', K.logs, ARGV[6])
local parents = split(redis.call('HGET', K.topo, node .. '|p'))
local res = {r[3], r[4], r[5]}
if #parents > 0 then
  local outs = redis.call('HMGET', K.out, unpack(parents))
  for i, p in ipairs(parents) do
    res[#res + 1] = p
    res[#res + 1] = outs[i]
  end
end
return res

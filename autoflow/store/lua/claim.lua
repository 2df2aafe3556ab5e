-- ARGV: node, attempt, token, lease (seconds), (unused), log. Queued/retrying/waiting -> running.
-- The lease is measured on the server's clock, so a worker's clock never shortens it.
-- Reply: {workflow, digest, inputs, map node or '', item or nil, wake_at or '', run priority,
--         code, signature, items to gather (a map node whose items are done) or '',
--         parent, value, ...}
local node, attempt, token, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], server_now()
local until_ = tonumber(now) + tonumber(ARGV[4])
local st = redis.call('HGET', K.st, node)
if st ~= 'queued' and st ~= 'retrying' and st ~= 'waiting' then return false end
if num(redis.call('HGET', K.att, node)) ~= attempt then return false end
local r = redis.call('HMGET', K.run, 'status', 'cancel', 'workflow', 'digest', 'inputs', 'priority', 'code', 'signature')
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
local m = map_of(node)
local item = false
if m then item = redis.call('HGET', K.iv, node) end
local gather = ''
if not m then gather = redis.call('HGET', K.cnt, node .. '|n') or '' end
local res = {r[3], r[4], r[5], m or '', item, redis.call('HGET', K.tm, node .. '|w') or '', r[6], r[7] or '', r[8] or '',
  gather}
-- An item reads its map's other arguments, not the list it came from (O(1) per item); a
-- map node gathering its items reads no parent.
local parents = redis.call('HGET', K.topo, (m or node) .. '|p')
if gather ~= '' then parents = '' end
if m then parents = redis.call('HGET', K.topo, m .. '|ip') or parents end
for _, p in ipairs(split(parents)) do
  res[#res + 1] = p
  res[#res + 1] = parent_value(p)
end
return res

-- ARGV: now, retention_ms. Nodes not running -> cancelled; nodes waiting on items or a
-- child run end at once; the run ends when no node runs any more.
-- Reply: {status, child runs to cancel...}
local now = ARGV[1]
local status = redis.call('HGET', K.run, 'status')
if not status then return {'gone'} end
if status ~= 'pending' and status ~= 'running' and status ~= 'paused' then return {status} end
redis.call('HSET', K.run, 'cancel', '1')
local WAITING = {pending = true, queued = true, retrying = true, waiting = true}
local children, n = {}, 0
for _, node in ipairs(redis.call('LRANGE', K.order, 0, -1)) do
  local st = redis.call('HGET', K.st, node)
  if WAITING[st] then
    redis.call('HSET', K.st, node, 'cancelled')
    redis.call('HSET', K.tm, node .. '|f', now)
    n = n + 1
  elseif st == 'running' then
    local owner = redis.call('HGET', K.own, node) or ''
    if string.sub(owner, 1, 5) == '@sub:' then children[#children + 1] = string.sub(owner, 6) end
    if string.sub(owner, 1, 1) == '@' then cancel_node(node, now) end
  end
end
for _, node in ipairs(redis.call('ZRANGE', K.due, 0, -1)) do
  if map_of(node) and WAITING[redis.call('HGET', K.st, node)] then
    redis.call('HSET', K.st, node, 'cancelled')
  end
end
redis.call('DEL', K.due)
redis.call('HSET', K.run, 'queued', 0)
redis.call('HINCRBY', K.run, 'remaining', 0 - n)
log(now, 'warn', 'cancellation requested', nil)
local fin = maybe_finish(now, ARGV[2])
local res = {status}
if fin ~= '' then res[1] = fin end
for _, child in ipairs(children) do res[#res + 1] = child end
return res

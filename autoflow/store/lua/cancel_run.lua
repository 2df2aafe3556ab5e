-- ARGV: now, retention_ms. Nodes not running -> cancelled; the run ends when none runs.
local now = ARGV[1]
local status = redis.call('HGET', K.run, 'status')
if not status then return {'gone'} end
if status ~= 'pending' and status ~= 'running' and status ~= 'paused' then return {status} end
redis.call('HSET', K.run, 'cancel', '1')
local n = 0
for _, node in ipairs(redis.call('LRANGE', K.order, 0, -1)) do
  local st = redis.call('HGET', K.st, node)
  if st == 'pending' or st == 'queued' or st == 'retrying' then
    redis.call('HSET', K.st, node, 'cancelled')
    redis.call('HSET', K.tm, node .. '|f', now)
    n = n + 1
  end
end
redis.call('DEL', K.due)
redis.call('HSET', K.run, 'queued', 0)
redis.call('HINCRBY', K.run, 'remaining', 0 - n)
log(now, 'warn', 'cancellation requested', nil)
local fin = maybe_finish(now, ARGV[2])
if fin ~= '' then return {fin} end
return {status}

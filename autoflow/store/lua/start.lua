-- ARGV: (unused). Start an admitted run: pending -> running, roots queued.
-- Reply: {'started', messages...}, or {status, '1' if it started earlier else '0'}.
local r = redis.call('HMGET', K.run, 'status', 'started_at')
if r[1] ~= 'pending' then
  local started = '0'
  if r[2] then started = '1' end
  return {r[1] or 'gone', started}
end
local now = server_now()
redis.call('HSET', K.run, 'status', 'running', 'started_at', now)
log(now, 'info', 'run started', nil)
local res = {'started'}
for _, node in ipairs(split(redis.call('HGET', K.run, 'roots'))) do
  if redis.call('HGET', K.st, node) == 'pending' then queue(node, now, res) end
end
return res

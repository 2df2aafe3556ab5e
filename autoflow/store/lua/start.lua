-- ARGV: now. Start an admitted run: pending -> running, roots queued.
local now = ARGV[1]
local status = redis.call('HGET', K.run, 'status')
if status ~= 'pending' then return {status or 'gone'} end
redis.call('HSET', K.run, 'status', 'running', 'started_at', now)
log(now, 'info', 'run started', nil)
local res = {'running'}
for _, node in ipairs(split(redis.call('HGET', K.run, 'roots'))) do
  if redis.call('HGET', K.st, node) == 'pending' then queue(node, now, res) end
end
return res

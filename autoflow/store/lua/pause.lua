-- ARGV: (none). Pending/running -> paused in one step: a run that finished meanwhile is
-- left as it is. Reply: {status after}.
local status = redis.call('HGET', K.run, 'status')
if not status then return {'gone'} end
if status ~= 'pending' and status ~= 'running' then return {status} end
local now = server_now()
redis.call('HSET', K.run, 'status', 'paused')
log(now, 'info', 'run paused', nil)
return {'paused'}

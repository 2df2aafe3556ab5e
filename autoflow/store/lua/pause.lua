-- ARGV: (none). Pending/running -> paused in one step: a run that finished meanwhile is
-- left as it is. Reply: {status after}.
load_run()
if not R.status then return {'gone'} end
if R.status ~= 'pending' and R.status ~= 'running' then return {R.status} end
local now = server_now()
redis.call('HSET', K.run, 'status', 'paused')
log(now, 'info', 'run paused', nil)
save()
return {'paused'}

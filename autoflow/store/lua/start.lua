-- ARGV: (none). Start an admitted run: pending -> running, roots queued.
-- Reply: {'started', messages...}, or {status, '1' if it started earlier else '0'}.
load_run()
if R.status ~= 'pending' then
  local earlier = '0'
  if started() then earlier = '1' end
  return {R.status or 'gone', earlier}
end
local now = server_now()
redis.call('HSET', K.run, 'status', 'running', 'started_at', now)
R.status = 'running'
log(now, 'info', 'run started', nil)
local res = {}
for _, node in ipairs(csv(redis.call('HGET', K.run, 'roots'))) do
  local s = get(node)
  if s and s[ST] == 'pending' then queue(node, s, now, res) end
end
save()
local out = {'started'}
for _, v in ipairs(res) do out[#out + 1] = v end
return out

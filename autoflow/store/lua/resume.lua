-- ARGV: (none). Paused -> running (or pending if never started); returns messages to re-send.
load_run()
if R.status ~= 'paused' then return {''} end
local now = server_now()
if not started() then
  redis.call('HSET', K.run, 'status', 'pending')
  log(now, 'info', 'run resumed', nil)
  save()
  return {'pending'}
end
redis.call('HSET', K.run, 'status', 'running')
R.status = 'running'
log(now, 'info', 'run resumed', nil)
local out = {'running'}
local due = redis.call('ZRANGE', K.due, 0, -1, 'WITHSCORES')
for i = 1, #due, 2 do
  local node, at = due[i], tonumber(due[i + 1])
  local eta = ''
  if at > tonumber(now) then eta = due[i + 1] else redis.call('ZADD', K.due, now, node) end
  local s = get(node)
  ready(out, node, (s and s[ATT]) or '1', eta)
end
save()
return out

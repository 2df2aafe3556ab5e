-- ARGV: now. Paused -> running (or pending if never started); returns messages to re-send.
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', K.run, 'status', 'started_at')
if r[1] ~= 'paused' then return {''} end
if not r[2] then
  redis.call('HSET', K.run, 'status', 'pending')
  log(ARGV[1], 'info', 'run resumed', nil)
  return {'pending'}
end
redis.call('HSET', K.run, 'status', 'running')
log(ARGV[1], 'info', 'run resumed', nil)
local res = {'running'}
local due = redis.call('ZRANGE', K.due, 0, -1, 'WITHSCORES')
for i = 1, #due, 2 do
  local node, at = due[i], tonumber(due[i + 1])
  local eta = ''
  if at > now then eta = due[i + 1] else redis.call('ZADD', K.due, ARGV[1], node) end
  ready(res, node, num(redis.call('HGET', K.att, node)), eta)
end
return res

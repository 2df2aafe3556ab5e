-- ARGV: node, token, error, retry delay in seconds ('' = no retry), (unused), retention_ms,
-- nlogs, logs... Running -> retrying (next attempt returned with its eta, on the server's
-- clock) or -> failed.
local node, err = ARGV[1], ARGV[3]
local s, now = settling(7)
if not s then return {0} end
local res = {}
local m = map_of(node)
if R.cancel then
  cancel_node(node, s, now)
elseif ARGV[4] ~= '' then
  local retry_at = string.format('%.6f', tonumber(now) + tonumber(ARGV[4]))
  redis.call('HSET', K.err, node, err)
  s[ATT] = tostring(num(s[ATT]) + 1)
  s[ST] = 'retrying'
  s[OWN] = ''
  s[FINISHED] = now
  put(node, s)
  redis.call('ZREM', K.lease, node)
  redis.call('ZADD', K.due, retry_at, node)
  bump('running', -1)
  bump('queued', 1)
  ready(res, node, s[ATT], retry_at)
  save()
  return reply('', res)
elseif m then
  item_failed(m, node, s, err, now, res)
else
  fail_node(node, s, err, now, res, true)
end
local fin = maybe_finish(now, ARGV[6])
save()
return reply(fin, res)

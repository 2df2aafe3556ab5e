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
  s[FINISHED] = now
  requeue(node, s, retry_at)
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

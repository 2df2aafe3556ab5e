-- ARGV: seconds ahead of the server's clock to look (0 but in tests), requeue_after (seconds),
-- max_stalls, retention_ms, crash message format, resend limit (-1: no limit).
-- Expired leases go back to queued (or fail as crashed); up to `limit` queued nodes whose
-- message is older than requeue_after are re-sent. Times are the server's.
-- Reply: {status, finished status or '', completed and failed node counts, stale nodes
-- re-sent, messages (4 fields each)...}
load_run()
if not R.status then return {'gone', '', 0, 0, 0} end
if R.status ~= 'running' and R.status ~= 'paused' then return {R.status, '', R.n_ok, R.failed, 0} end
local now = string.format('%.6f', tonumber(server_now()) + tonumber(ARGV[1]))
local max_stalls = tonumber(ARGV[3])
local requeue_before = tonumber(now) - tonumber(ARGV[2])
local res = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', K.lease, '-inf', '(' .. now)) do
  local s = get(node)
  if not s or s[ST] ~= 'running' then
    redis.call('ZREM', K.lease, node)
  else
    local stalls = num(s[STALL]) + 1
    s[STALL] = tostring(stalls)
    if R.cancel then
      cancel_node(node, s, now)
    elseif stalls > max_stalls then
      log(now, 'error', 'worker lost ' .. stalls .. ' time(s); node failed as crashed', node)
      local err = cjson.encode({type = 'WorkerCrashed', message = string.format(ARGV[5], node, stalls),
                                traceback = '', node_id = node})
      local m = map_of(node)
      if m then item_failed(m, node, s, err, now, res) else fail_node(node, s, err, now, res, true) end
    else
      s[ST] = 'queued'
      s[FINISHED] = ''
      requeue(node, s, now)
      log(now, 'warn', 'worker lost (lease expired); re-queued (stall ' .. stalls .. ')', node)
      ready(res, node, s[ATT], '')
    end
  end
end
local resent = 0
if R.status == 'running' and not R.cancel and tonumber(ARGV[6]) ~= 0 then
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', K.due, '-inf', '(' .. requeue_before, 'LIMIT', 0, ARGV[6])) do
    local s = get(node)
    redis.call('ZADD', K.due, now, node)
    ready(res, node, (s and s[ATT]) or '1', '')
    resent = resent + 1
  end
end
local fin = maybe_finish(now, ARGV[4])
save()
local out = {R.status, fin, R.n_ok, R.failed, resent}
for _, v in ipairs(res) do out[#out + 1] = v end
return out

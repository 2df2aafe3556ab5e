-- ARGV: seconds ahead of the server's clock to look (0 but in tests), requeue_after (seconds),
-- max_stalls, retention_ms, crash message format,
-- resend limit (-1: no limit). Expired leases go back to queued (or fail as crashed); up to
-- `limit` queued nodes whose message is older than requeue_after are re-sent. Times are
-- the server's (leases are measured on it).
-- Reply: {status, finished status or '', stale nodes re-sent, messages (4 fields each)...}
local now, max_stalls = string.format('%.6f', tonumber(server_now()) + tonumber(ARGV[1])), tonumber(ARGV[3])
local requeue_before = tonumber(now) - tonumber(ARGV[2])
local status = redis.call('HGET', K.run, 'status')
if not status then return {'gone', '', 0} end
if status ~= 'running' and status ~= 'paused' then return {status, '', 0} end
local res = {status, '', 0}
local cancel = redis.call('HGET', K.run, 'cancel') == '1'
for _, node in ipairs(redis.call('ZRANGEBYSCORE', K.lease, '-inf', '(' .. now)) do
  local stalls = redis.call('HINCRBY', K.cnt, node .. '|stall', 1)
  if cancel then
    cancel_node(node, now)
  elseif stalls > max_stalls then
    log(now, 'error', 'worker lost ' .. stalls .. ' time(s); node failed as crashed', node)
    local err = cjson.encode({type = 'WorkerCrashed', message = string.format(ARGV[5], node, stalls),
                              traceback = '', node_id = node})
      fail_node(node, err, now, res)
  else
    release(node, now)
    redis.call('HDEL', K.tm, node .. '|f')
    redis.call('HSET', K.st, node, 'queued')
    redis.call('ZADD', K.due, now, node)
    redis.call('HINCRBY', K.run, 'running', -1)
    redis.call('HINCRBY', K.run, 'queued', 1)
    log(now, 'warn', 'worker lost (lease expired); re-queued (stall ' .. stalls .. ')', node)
    ready(res, node, num(redis.call('HGET', K.att, node)), '')
  end
end
if status == 'running' and not cancel and tonumber(ARGV[6]) ~= 0 then
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', K.due, '-inf', '(' .. requeue_before, 'LIMIT', 0, ARGV[6])) do
    redis.call('ZADD', K.due, now, node)
    ready(res, node, num(redis.call('HGET', K.att, node)), '')
    res[3] = res[3] + 1
  end
end
res[2] = maybe_finish(now, ARGV[4])
return res

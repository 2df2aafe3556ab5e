-- ARGV: node, token, error, retry delay in seconds ('' = no retry), (unused), retention_ms,
-- nlogs, logs... Running -> retrying (next attempt returned with its eta, on the server's
-- clock) or -> failed.
local node, token, err, now = ARGV[1], ARGV[2], ARGV[3], server_now()
local retry_at = ''
if ARGV[4] ~= '' then retry_at = string.format('%.6f', tonumber(now) + tonumber(ARGV[4])) end
if not held(node, token) then return {0} end
push_logs(8, tonumber(ARGV[7]))
local res = {1, ''}
local m = map_of(node)
if redis.call('HGET', K.run, 'cancel') == '1' then
  cancel_node(node, now)
elseif retry_at ~= '' then
  local attempt = redis.call('HINCRBY', K.att, node, 1)
  redis.call('HSET', K.st, node, 'retrying')
  redis.call('HSET', K.err, node, err)
  release(node, now)
  redis.call('ZADD', K.due, retry_at, node)
  redis.call('HINCRBY', K.run, 'running', -1)
  redis.call('HINCRBY', K.run, 'queued', 1)
  ready(res, node, attempt, retry_at)
  return res
elseif m then
  item_failed(m, node, err, now, res)
else
  fail_node(node, err, now, res)
end
res[2] = maybe_finish(now, ARGV[6])
return res

-- ARGV: node, token, now, retention_ms, window, n items, nlogs, logs...
-- A map node got its n items (already stored by expand_items): queue the first `window`
-- of them; the node waits for them, holding no worker.
local node, token, now = ARGV[1], ARGV[2], server_now()
if not held(node, token) then return {0} end
push_logs(8, tonumber(ARGV[7]))
local n, window = tonumber(ARGV[6]), tonumber(ARGV[5])
local res = {1, ''}
if n == 0 then
  redis.call('HSET', K.st, node, 'completed')
  redis.call('HSET', K.out, node, '[]')
  redis.call('HSET', K.cnt, node .. '|n', 0)
  release(node, now)
  completed(node, now, res)
  res[2] = maybe_finish(now, ARGV[4])
  return res
end
redis.call('HSET', K.own, node, '@map')
redis.call('ZREM', K.lease, node)
redis.call('HSET', K.cnt, node .. '|n', n, node .. '|next', window, node .. '|done', 0)
for i = 0, window - 1 do
  local item = node .. '[' .. i .. ']'
  redis.call('HSET', K.att, item, 1)
  queue(item, now, res)
end
return res

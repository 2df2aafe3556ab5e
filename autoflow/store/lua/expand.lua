-- ARGV: node, token, now, retention_ms, max_parallel (-1: all), nlogs, logs..., items (JSON)...
-- A map node got its items: store them, queue the first window; it waits for them.
local node, token, now = ARGV[1], ARGV[2], server_now()
if not held(node, token) then return {0} end
local nlogs = tonumber(ARGV[6])
push_logs(7, nlogs)
local first = 7 + nlogs
local n = #ARGV - first + 1
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
local window = n
if tonumber(ARGV[5]) > 0 then window = math.min(n, tonumber(ARGV[5])) end
redis.call('HSET', K.own, node, '@map')
redis.call('ZREM', K.lease, node)
redis.call('HSET', K.cnt, node .. '|n', n, node .. '|next', window, node .. '|done', 0)
for i = 0, n - 1 do
  redis.call('HSET', K.iv, node .. '[' .. i .. ']', ARGV[first + i])
end
for i = 0, window - 1 do
  local item = node .. '[' .. i .. ']'
  redis.call('HSET', K.att, item, 1)
  queue(item, now, res)
end
return res

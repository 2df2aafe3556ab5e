-- ARGV: node, token, (unused), retention_ms, window, n items, nlogs, logs...
-- A map node got its n items (already stored by expand_items): queue the first `window`
-- of them; the node waits for them, holding no worker.
local node = ARGV[1]
local s, now = settling(7)
if not s then return {0} end
local n, window = tonumber(ARGV[6]), tonumber(ARGV[5])
local res = {}
if n == 0 then
  redis.call('HSET', K.out, node, '[]')
  s[NITEMS], s[NEXT], s[DONE] = '0', '0', '0'
  release(node, s, 'completed', now)
  completed(node, '[]', now, res)
  local fin = maybe_finish(now, ARGV[4])
  save()
  return reply(fin, res)
end
s[OWN] = '@map'
s[NITEMS], s[NEXT], s[DONE] = tostring(n), tostring(window), '0'
put(node, s)
redis.call('ZREM', K.lease, node)
for i = 0, window - 1 do
  queue(node .. '[' .. i .. ']', blank_state(), now, res)
end
save()
return reply('', res)

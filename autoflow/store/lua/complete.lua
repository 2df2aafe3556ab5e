-- ARGV: node, token, output, retention_ms, continuation token ('' = none), its lease
-- (seconds), nlogs, logs... Running -> completed (fenced by the token). With a
-- continuation token the first node that becomes ready is claimed for the same worker
-- (returned after the messages), so a chain costs one round trip per node.
local node = ARGV[1]
local s, now = settling(7)
if not s then return {0} end
local m = map_of(node)
if ARGV[5] ~= '' then
  C = {token = ARGV[5], until_ = server_later(tonumber(ARGV[6])), known = false, value = false,
    node = false, state = false}
  if not m then C.known, C.value = node, ARGV[3] end
end
redis.call('HSET', K.out, node, ARGV[3])
if num(s[ATT]) > 1 then redis.call('HDEL', K.err, node) end
release(node, s, 'completed', now)
local res = {}
if m then
  bump('running', -1)
  item_done(m, now, res)
else
  completed(node, ARGV[3], now, res)
end
local fin = maybe_finish(now, ARGV[4])
save()
return reply(fin, res)

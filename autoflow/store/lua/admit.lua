-- KEYS: pending runs (zset, score -priority), active runs (set), active sub-workflow runs
-- (set). ARGV: limit. Move the best pending runs to the active set while fewer than `limit`
-- top-level runs are active (sub-workflow runs ride on their parent's slot).
local free = tonumber(ARGV[1]) - (redis.call('SCARD', KEYS[2]) - redis.call('SCARD', KEYS[3]))
if free <= 0 then return {} end
local picked = redis.call('ZRANGE', KEYS[1], 0, free - 1)
for _, id in ipairs(picked) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('SADD', KEYS[2], id)
end
return picked

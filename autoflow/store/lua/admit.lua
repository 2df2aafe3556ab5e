-- KEYS: pending runs (zset, score -priority), active runs (set), active sub-workflow runs
-- (set), pending sub-workflow runs (zset). ARGV: limit.
-- Sub-workflow runs ride on their parent's slot: up to 100 of them are taken whatever the
-- limit. Then the best pending runs move to the active set while fewer than `limit`
-- top-level runs are active. Reply: {number of sub-workflow runs, run ids...}.
local picked = redis.call('ZRANGE', KEYS[4], 0, 99)
for _, id in ipairs(picked) do
  redis.call('ZREM', KEYS[4], id)
  redis.call('SADD', KEYS[2], id)
  redis.call('SADD', KEYS[3], id)
end
local subs = #picked
local free = tonumber(ARGV[1]) - (redis.call('SCARD', KEYS[2]) - redis.call('SCARD', KEYS[3]))
if free > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, free - 1)) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('SADD', KEYS[2], id)
    picked[#picked + 1] = id
  end
end
table.insert(picked, 1, subs)
return picked

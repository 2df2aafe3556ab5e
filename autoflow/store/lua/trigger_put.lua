-- KEYS: bodies (hash id -> JSON), versions (hash id -> int), wake index (zset id -> unix s).
-- ARGV: id, body, expected version ('' = create only), wake_at ('' = not in the index).
-- Compare-and-set of one trigger record; returns the new version, or 0 if refused.
local id, body, expected, wake = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = redis.call('HGET', KEYS[2], id)
if expected == '' then
  if current then return 0 end
elseif current ~= expected then
  return 0
end
local version = redis.call('HINCRBY', KEYS[2], id, 1)
redis.call('HSET', KEYS[1], id, body)
if wake == '' then redis.call('ZREM', KEYS[3], id) else redis.call('ZADD', KEYS[3], wake, id) end
return version

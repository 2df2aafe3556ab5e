-- KEYS: the workflow's versions (hash), the organization's index of ids (zset).
-- ARGV: expected latest version (-1: any), the version's JSON record, now, workflow id.
-- Stores the record as the next version; returns its number, or -1 if the latest
-- version was not the expected one (nothing changed).
local latest = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
local expected = tonumber(ARGV[1])
if expected >= 0 and latest ~= expected then return -1 end
local n = latest + 1
redis.call('HSET', KEYS[1], 'latest', n, tostring(n), ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[4])
return n

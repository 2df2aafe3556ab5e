-- KEYS: the slots (zset holder -> expiry). ARGV: holder, limit, lease (seconds).
-- Take one of `limit` slots for `holder` until now + lease (renewed by heartbeats);
-- expired holders (dead workers) free their slot. Returns 1 if taken, 0 if all are busy.
local holder, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], holder) and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + lease, holder)
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 2000))
return 1

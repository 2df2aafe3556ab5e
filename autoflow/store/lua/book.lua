-- KEYS: active runs, active sub-workflow runs, pending, pending sub-workflow runs, the
-- finished runs of this status (zset), the node stats (hash: "<hour>|completed", ...).
-- ARGV: run id, now, completed nodes, failed nodes, the hour.
-- Global bookkeeping of a run that ended, once: a second call for the same run does nothing.
-- Reply: the number of runs waiting for admission (a worker need not admit when none is).
local waiting = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then return waiting end
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[5] .. '|completed', ARGV[3])
redis.call('HINCRBY', KEYS[6], ARGV[5] .. '|failed', ARGV[4])
return waiting

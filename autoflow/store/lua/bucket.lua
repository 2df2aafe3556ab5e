-- KEYS: the bucket (hash). ARGV: count, per (seconds), tokens (optional, default 1: 1 to
-- count). Token bucket of `count` calls per `per` seconds, on the server's clock: takes
-- `tokens` at once, all or none. Returns '0' if they were taken, else (none taken) the
-- seconds until the bucket holds them all.
local count, per, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3] or '1')
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = count
-- The clock never runs back here (a stored time is exact to the microsecond).
if b[1] then tokens = math.min(count, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * count / per) end
local wait = 0
if tokens >= want then tokens = tokens - want else wait = (want - tokens) * per / count end
-- Written in full: tostring keeps 14 digits, which rounds a timestamp to 0.1 ms (possibly
-- ahead of the next call's clock) and drifts the token count.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', t[1] .. '.' .. string.format('%06d', t[2]))
redis.call('PEXPIRE', KEYS[1], math.ceil(per * 2000) + 1000)
return tostring(wait)

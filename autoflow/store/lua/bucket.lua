-- KEYS: the bucket (hash). ARGV: count, per (seconds). Token bucket of `count` calls per
-- `per` seconds, on the server's clock. Returns '0' if a call may go now, else the seconds
-- to wait before trying again.
local count, per = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = count
-- The clock never runs back here (a stored time is exact to the microsecond).
if b[1] then tokens = math.min(count, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * count / per) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) * per / count end
-- Written in full: tostring keeps 14 digits, which rounds a timestamp to 0.1 ms (possibly
-- ahead of the next call's clock) and drifts the token count.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', t[1] .. '.' .. string.format('%06d', t[2]))
redis.call('PEXPIRE', KEYS[1], math.ceil(per * 2000) + 1000)
return tostring(wait)

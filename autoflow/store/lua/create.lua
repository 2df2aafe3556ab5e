-- ARGV: 2k, then k run fields as name, value pairs; n, then the n node ids, then their n
-- topology entries (TOPO in lib.lua, formatted by the client: the same for every run of
-- a definition).
-- Create the run and its nodes unless the run exists (an idempotency key names one run):
-- one atomic step, so a run is never half-written and one key never makes two runs.
-- Reply: {1 if created else 0, status}.
local existing = redis.call('HGET', K.run, 'status')
if existing then return {0, existing} end
local nf = tonumber(ARGV[1])
redis.call('HSET', K.run, unpack(ARGV, 2, nf + 1))
local n = tonumber(ARGV[nf + 2])
local ids, topos = nf + 2, nf + 2 + n
local blank = table.concat(blank_state(), '|')
local CHUNK = 500
for first = 1, n, CHUNK do
  local last = math.min(first + CHUNK - 1, n)
  local ns, tp = {}, {}
  for i = first, last do
    local id = ARGV[ids + i]
    ns[#ns + 1] = id
    ns[#ns + 1] = blank
    tp[#tp + 1] = id
    tp[#tp + 1] = ARGV[topos + i]
  end
  redis.call('HSET', K.ns, unpack(ns))
  redis.call('HSET', K.topo, unpack(tp))
  redis.call('RPUSH', K.order, unpack(ARGV, ids + first, ids + last))
end
return {1, 'pending'}

-- ARGV: run fields (JSON object), nodes (JSON array of
-- [id, type, parents csv, children csv, rule, priority, when, item parents csv or false]).
-- Create the run and its nodes unless the run exists (an idempotency key names one run):
-- one atomic step, so a run is never half-written and one key never makes two runs.
-- Reply: {1 if created else 0, status}.
local existing = redis.call('HGET', K.run, 'status')
if existing then return {0, existing} end
local fields = cjson.decode(ARGV[1])
local flat = {}
for k, v in pairs(fields) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
redis.call('HSET', K.run, unpack(flat))
local nodes = cjson.decode(ARGV[2])
local blank = table.concat(blank_state(), '|')
local CHUNK = 500
for first = 1, #nodes, CHUNK do
  local ns, tp, order = {}, {}, {}
  for i = first, math.min(first + CHUNK - 1, #nodes) do
    local n = nodes[i]
    local when, iparents = n[7], n[8]
    if when == false then when = '' end
    if iparents == false then iparents = '-' end
    ns[#ns + 1] = n[1]
    ns[#ns + 1] = blank
    tp[#tp + 1] = n[1]
    tp[#tp + 1] = table.concat({n[5], tostring(n[6]), when, tostring(#csv(n[3])), n[3], n[4], iparents, n[2]}, '|')
    order[#order + 1] = n[1]
  end
  redis.call('HSET', K.ns, unpack(ns))
  redis.call('HSET', K.topo, unpack(tp))
  redis.call('RPUSH', K.order, unpack(order))
end
return {1, 'pending'}

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
local CHUNK = 500
for first = 1, #nodes, CHUNK do
  local st, att, cnt, topo, order = {}, {}, {}, {}, {}
  for i = first, math.min(first + CHUNK - 1, #nodes) do
    local n = nodes[i]
    local id = n[1]
    st[#st + 1] = id; st[#st + 1] = 'pending'
    att[#att + 1] = id; att[#att + 1] = 1
    local np = 0
    if n[3] ~= '' then np = #split(n[3]) end
    cnt[#cnt + 1] = id .. '|np'; cnt[#cnt + 1] = np
    topo[#topo + 1] = id .. '|c'; topo[#topo + 1] = n[4]
    topo[#topo + 1] = id .. '|p'; topo[#topo + 1] = n[3]
    topo[#topo + 1] = id .. '|t'; topo[#topo + 1] = n[2]
    if n[5] ~= 'all_success' then topo[#topo + 1] = id .. '|r'; topo[#topo + 1] = n[5] end
    if n[6] ~= 0 then topo[#topo + 1] = id .. '|pr'; topo[#topo + 1] = n[6] end
    if n[7] then topo[#topo + 1] = id .. '|w'; topo[#topo + 1] = n[7] end
    if n[8] then topo[#topo + 1] = id .. '|ip'; topo[#topo + 1] = n[8] end
    order[#order + 1] = id
  end
  redis.call('HSET', K.st, unpack(st))
  redis.call('HSET', K.att, unpack(att))
  redis.call('HSET', K.cnt, unpack(cnt))
  redis.call('HSET', K.topo, unpack(topo))
  redis.call('RPUSH', K.order, unpack(order))
end
return {1, 'pending'}

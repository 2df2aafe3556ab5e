-- Shared helpers of autoflow's Redis scripts, first part: a run's keys, texts and numbers,
-- the server's time, node states, the topology, the run's counters, log lines and save();
-- lib_flow.lua (loaded right after, in the same chunk) moves the graph. Every script
-- touches only the keys of one run (they share the hash tag {run_id}), passed in the order
-- of K below.
--
-- The helpers are loaded once as a Redis function library where the server has functions
-- (Redis 7), else sent ahead of each script (EVALSHA): see autoflow/store/redis_scripts.py.
-- Either way a transition starts with begin(keys, args), which resets the per-call state
-- below; KEYS and ARGV are this file's locals (declared ahead of it), set by begin.
-- K is filled by begin() on every call (one table for all calls: no allocation).
local K = {run = false, ns = false, topo = false, out = false, err = false, lease = false, due = false, logs = false,
  done = false, order = false, iv = false}
local R, LOGS, TOPO, C
-- K.ns holds one field per node (and per map item "M[i]"): its state, '|'-separated, at
-- these positions. K.topo holds one field per node: its place in the graph (TOPO below).
local ST, ATT, OWN, STARTED, FINISHED, STALL, WAKE, CHILD, OK, FAIL, SKIP, HANDLED, NITEMS, NEXT, DONE =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
local NFIELDS = 15
local R_RULE, R_PRIO, R_WHEN, R_NP, R_PARENTS, R_CHILDREN, R_IPARENTS, R_TYPE = 1, 2, 3, 4, 5, 6, 7, 8
-- The eight fields of a K.topo entry in one match (the type, last, may hold anything).
local TOPO_FIELDS = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$'

local function split(s, sep, limit)
  local t, start = {}, 1
  if s == nil or s == false then return t end
  while true do
    if limit and #t == limit - 1 then t[#t + 1] = string.sub(s, start); return t end
    local i = string.find(s, sep, start, true)
    if not i then t[#t + 1] = string.sub(s, start); return t end
    t[#t + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

local function csv(s)
  local t = {}
  if s and s ~= '' then
    for x in string.gmatch(s, '[^,]+') do t[#t + 1] = x end
  end
  return t
end

-- The number in a text (0 for none). Texts met before are looked up, not converted again
-- (strtod costs more than the lookup; the counts and flags of states repeat): kept across
-- calls while the function library is loaded, forgotten past NUM_LIMIT texts.
local NUM, NUM_N, NUM_LIMIT = {}, 0, 10000

local function num(v)
  if not v then return 0 end
  local n = NUM[v]
  if n == nil then
    n = tonumber(v) or 0
    if NUM_N >= NUM_LIMIT then NUM, NUM_N = {}, 0 end
    NUM[v], NUM_N = n, NUM_N + 1
  end
  return n
end

-- The text of a count. Converting a number costs far more than a table read (Lua formats
-- every number as a double), so small counts keep their text across calls while the
-- function library is loaded.
local ISTR, ISTR_LIMIT = {}, 10000

local function istr(n)
  local s = ISTR[n]
  if s == nil then
    s = string.format('%d', n)
    if n >= -1 and n <= ISTR_LIMIT then ISTR[n] = s end
  end
  return s
end

-- The server's clock: scripts run one at a time, so times stamped with it follow the
-- order in which transitions happened, whichever worker sent them.
-- Written as 'seconds.microseconds' from TIME's two texts, with no number between (a
-- conversion costs more than the rest). NOW_S and NOW_US keep the parts for server_later.
local NOW_S, NOW_US
local US_PAD = {'00000', '0000', '000', '00', '0', ''}

local function server_now()
  local t = redis.call('TIME')
  NOW_S, NOW_US = t[1], US_PAD[#t[2]] .. t[2]
  return NOW_S .. '.' .. NOW_US
end

-- The time `seconds` after this call's server_now() (an error before it), in the same form.
local function server_later(seconds)
  if seconds == math.floor(seconds) then
    return string.format('%d', tonumber(NOW_S) + seconds) .. '.' .. NOW_US
  end
  return string.format('%.6f', tonumber(NOW_S .. '.' .. NOW_US) + seconds)
end

-- The map node of an item "M[i]", or nil for a plain node.
local function map_of(node)
  if string.byte(node, -1) ~= 93 then return nil end  -- no closing ']': a plain node (the common case)
  return string.match(node, '^(.+)%[%d+%]$')
end

-- Node state ------------------------------------------------------------------------------
local function blank_state()
  return {'pending', '1', '', '', '', '0', '', '', '0', '0', '0', '0', '', '', ''}
end

-- The NFIELDS fields of a state in one match (a state written with fewer is read field by
-- field below). Spelled out: a function library cannot call string.rep when it loads.
local STATE_FIELDS = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|'
  .. '([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$'

-- put() holds back one state (node, text) so that the next put() writes both in one HSET:
-- a chain step writes the node it settles and the next one. get() and every read of K.ns
-- see it; save() writes what is left, so every script that puts ends with save().
local HELD_NODE, HELD_STATE

local function flush_states()
  if HELD_NODE then
    redis.call('HSET', K.ns, HELD_NODE, HELD_STATE)
    HELD_NODE = nil
  end
end

-- Short states (no times in them: a pending node's, the same for every run) parsed before,
-- kept across calls while the function library is loaded; get() hands out copies.
local PARSED, PARSED_N, PARSED_LIMIT, PARSED_LEN = {}, 0, 1000, 32

local function get(node)
  local raw
  if node == HELD_NODE then raw = HELD_STATE else raw = redis.call('HGET', K.ns, node) end
  if not raw then return nil end
  local known = PARSED[raw]
  if known then return {unpack(known)} end
  local s = {string.match(raw, STATE_FIELDS)}
  if #s == NFIELDS then
    if #raw <= PARSED_LEN then
      if PARSED_N >= PARSED_LIMIT then PARSED, PARSED_N = {}, 0 end
      PARSED[raw], PARSED_N = {unpack(s)}, PARSED_N + 1
    end
    return s
  end
  s = {}
  for field in string.gmatch(raw .. '|', '([^|]*)|') do s[#s + 1] = field end
  for i = #s + 1, NFIELDS do s[i] = '' end
  return s
end

local function put(node, s)
  -- one concatenation of all the fields: cheaper than table.concat's buffer
  local state = s[1] .. '|' .. s[2] .. '|' .. s[3] .. '|' .. s[4] .. '|' .. s[5] .. '|' .. s[6]
    .. '|' .. s[7] .. '|' .. s[8] .. '|' .. s[9] .. '|' .. s[10] .. '|' .. s[11] .. '|' .. s[12] .. '|' .. s[13]
    .. '|' .. s[14] .. '|' .. s[15]
  if HELD_NODE == nil or HELD_NODE == node then
    HELD_NODE, HELD_STATE = node, state
  else
    redis.call('HSET', K.ns, HELD_NODE, HELD_STATE, node, state)
    HELD_NODE = nil
  end
end

-- Parsed K.topo entries by the run's topo_id (the hash of its entries as the client wrote
-- them: the same for every run of a definition), kept across calls while the function
-- library is loaded (a script's copy starts empty on every call). Read only; dropped past
-- TOPO_LIMIT entries. Runs created without a topo_id parse theirs per call.
local TOPOS, TOPO_ENTRIES, TOPO_LIMIT = {}, 0, 20000

local function topo(node)
  if not TOPO then TOPO = {} end  -- a run without a topo_id: parsed for this call only
  local t = TOPO[node]
  if t == nil then
    local raw = redis.call('HGET', K.topo, node) or 'all_success|0||0||||'
    t = {string.match(raw, TOPO_FIELDS)}
    if #t == 0 then t = split(raw, '|', 8) end
    TOPO[node] = t
    TOPO_ENTRIES = TOPO_ENTRIES + 1
    if TOPO_ENTRIES > TOPO_LIMIT then TOPOS, TOPO_ENTRIES = {}, 0 end
  end
  return t
end

-- The node list in field `field` (R_PARENTS, R_CHILDREN or R_IPARENTS) of a topology entry,
-- split once and kept in the entry (four places after the field); read only.
local NO_NODES = {}

local function nodes_of(t, field)
  local l = t[field + 4]
  if l == nil then
    l = csv(t[field])
    t[field + 4] = l
  end
  return l
end

-- Run state: read once per script, written once (what changed) ---------------------------
-- (A run's hash keeps these fields first, from its creation: a small hash is a list that
-- Redis searches from its start, and they are read and written by every transition.)
local function load_run()
  local r = redis.call('HMGET', K.run, 'status', 'cancel', 'remaining', 'running', 'queued', 'n_ok', 'failed',
    'priority', 'topo_id')
  R = {status = r[1], cancel = r[2] == '1', remaining = num(r[3]), running = num(r[4]), queued = num(r[5]),
    n_ok = num(r[6]), failed = num(r[7]), priority = num(r[8])}
  if r[9] and not TOPO then  -- this run's topology as parsed for an earlier call
    local shared = TOPOS[r[9]]
    if shared == nil then
      shared = {}
      TOPOS[r[9]] = shared
    end
    TOPO = shared
  end
  return R
end

-- Whether the run started (its start time is set then).
local function started()
  return redis.call('HEXISTS', K.run, 'started_at') == 1
end

local function bump(field, by)
  R[field] = R[field] + by
end

-- An engine log line. Its messages are the engine's own texts (literals, counts, statuses:
-- nothing to escape) and node ids are plain (define/node.py's ID_PATTERN, plus "[i]" for
-- map items), so it is written as is in one concatenation; a node id that would need
-- escaping goes through cjson.
local function log(now, level, message, node)
  if not node then
    LOGS[#LOGS + 1] = '{"ts":' .. now .. ',"level":"' .. level .. '","message":"' .. message .. '"}'
  elseif string.find(node, '[%c"\\]') then
    LOGS[#LOGS + 1] = cjson.encode({ts = tonumber(now), level = level, message = message, node_id = node})
  else
    LOGS[#LOGS + 1] = '{"ts":' .. now .. ',"level":"' .. level .. '","message":"' .. message .. '","node_id":"' .. node
      .. '"}'
  end
end

local function add_logs(first, count)
  for i = first, first + count - 1 do LOGS[#LOGS + 1] = ARGV[i] end
end

-- Every counter is written whenever the run was loaded: cheaper than finding out which
-- changed (a table or more fields cost more than the three extra fields), and harmless.
local function save()
  flush_states()
  if R and R.status then
    redis.call('HSET', K.run, 'remaining', istr(R.remaining), 'running', istr(R.running), 'queued', istr(R.queued),
      'n_ok', istr(R.n_ok), 'failed', istr(R.failed))
  end
  if #LOGS > 0 then redis.call('RPUSH', K.logs, unpack(LOGS)) end
end

-- The start of every call: its keys and arguments, and fresh per-call state (the run's
-- counters R, log lines LOGS, the topology cache TOPO, the continuation C).
local function begin(keys, args)
  KEYS, ARGV = keys, args
  K.run, K.ns, K.topo, K.out, K.err, K.lease, K.due, K.logs, K.done, K.order, K.iv =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9], keys[10], keys[11]
  R, LOGS, TOPO, C, HELD_NODE, NOW_S, NOW_US = nil, {}, false, nil, nil, nil, nil
end

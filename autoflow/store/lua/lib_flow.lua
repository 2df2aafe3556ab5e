-- Shared helpers of autoflow's Redis scripts, second part: how a run's graph moves (rules,
-- queueing, settling, claims, maps, the end of a run). Loaded right after lib.lua, in the
-- same chunk: it uses lib.lua's locals (see autoflow/store/redis_scripts.py).

-- Mirror of autoflow.store.rules.decide: 'ready', 'skip' or 'wait'.
local function decide(rule, total, ok, fail, skip)
  local all = (ok + fail + skip) == total
  if rule == 'all_success' then
    if fail > 0 then return 'skip' end
    if all then
      if ok > 0 then return 'ready' end
      return 'skip'
    end
  elseif rule == 'all_done' then
    if all then return 'ready' end
  elseif rule == 'one_success' then
    if ok > 0 then return 'ready' end
    if all then return 'skip' end
  elseif rule == 'one_failed' then
    if fail > 0 then return 'ready' end
    if all then return 'skip' end
  elseif rule == 'all_failed' then
    if ok > 0 or skip > 0 then return 'skip' end
    if all then return 'ready' end
  else -- none_failed
    if fail > 0 then return 'skip' end
    if all then return 'ready' end
  end
  return 'wait'
end

-- Mirror of autoflow.store.rules.skip_outcome.
local function skip_outcome(rule, fail)
  if fail > 0 and (rule == 'all_success' or rule == 'none_failed' or rule == 'one_success') then
    return 'fail'
  end
  return 'skip'
end

local HANDLER = {one_failed = true, all_failed = true, all_done = true}

local function prio(node)
  return R.priority + num(topo(map_of(node) or node)[R_PRIO])
end

-- Append a message (node, attempt, priority, eta) to a reply.
local function ready(res, node, attempt, eta)
  res[#res + 1] = node
  res[#res + 1] = attempt
  res[#res + 1] = prio(node)
  res[#res + 1] = eta or ''
end

-- What a child receives from a parent: output, error (failed) or false (skipped).
-- `known` is a parent whose output JSON, `value`, the script already holds (or nil).
local function parent_values(parents, known, value, res)
  local need
  for _, p in ipairs(parents) do
    if p ~= known then
      need = need or {}
      need[#need + 1] = p
    end
  end
  local states, outs, errs
  if need then
    flush_states()
    states = redis.call('HMGET', K.ns, unpack(need))
    outs = redis.call('HMGET', K.out, unpack(need))
    errs = redis.call('HMGET', K.err, unpack(need))
  end
  local j = 0
  for _, p in ipairs(parents) do
    res[#res + 1] = p
    if p == known then
      res[#res + 1] = value
    else
      j = j + 1
      local st = states[j] and string.match(states[j], '^[^|]*') or ''
      if st == 'completed' then res[#res + 1] = outs[j] or false
      elseif st == 'failed' then res[#res + 1] = errs[j] or false
      else res[#res + 1] = false end
    end
  end
end

-- Claim data of `node` for a worker (the reply of claim.lua, also what a completion hands
-- back when it continues with the next node): the run's facts (only `with_run`: a
-- continuation's worker knows them already), the node's, then (parent, value) pairs.
-- `known` and `value`: see parent_values.
local function claim_data(node, s, known, value, res, with_run)
  local m = map_of(node)
  local wf, digest, inputs, code, signature, parent_run = '', '', '', '', '', ''
  if with_run then
    local r = redis.call('HMGET', K.run, 'workflow', 'digest', 'inputs', 'code', 'signature', 'parent_run')
    wf, digest, inputs, code, signature, parent_run = r[1], r[2], r[3], r[4] or '', r[5] or '', r[6] or ''
  end
  local item = false
  if m then item = redis.call('HGET', K.iv, node) end
  local gather = ''
  if not m and s[NITEMS] ~= '' then gather = s[NITEMS] end
  res[#res + 1] = node
  res[#res + 1] = s[ATT]
  res[#res + 1] = wf
  res[#res + 1] = digest
  res[#res + 1] = inputs
  res[#res + 1] = m or ''
  res[#res + 1] = item
  res[#res + 1] = s[WAKE]
  res[#res + 1] = R.priority
  res[#res + 1] = code
  res[#res + 1] = signature
  res[#res + 1] = gather
  res[#res + 1] = parent_run
  -- An item reads its map's other arguments, not the list it came from (O(1) per item); a
  -- map node gathering its items reads no parent.
  local t = topo(m or node)
  local parents = nodes_of(t, R_PARENTS)
  if m and t[R_IPARENTS] ~= '-' then parents = nodes_of(t, R_IPARENTS) end
  if gather ~= '' then parents = NO_NODES end
  parent_values(parents, known, value, res)
end

-- Queued/retrying/waiting (or pending, when continued) -> running, held by `token`.
local function take(node, s, token, until_, now)
  s[ST] = 'running'
  s[OWN] = token
  s[STARTED] = now
  s[FINISHED] = ''
  put(node, s)
  redis.call('ZADD', K.lease, until_, node)
  bump('running', 1)
  log(now, 'info', 'started (attempt ' .. s[ATT] .. ')', node)
end

-- A continuation: the worker that settled a node asks to run the next ready one itself
-- (no queue round trip). C = {token, until_, known, value, node, state}, every field set by
-- its constructor (false until known or taken: a field added later would grow the table).

local function queue(node, s, now, res)
  if C and not C.node and R.status == 'running' and not R.cancel then
    C.node, C.state = node, s
    take(node, s, C.token, C.until_, now)
    return
  end
  s[ST] = 'queued'
  put(node, s)
  redis.call('ZADD', K.due, now, node)
  bump('queued', 1)
  ready(res, node, s[ATT], '')
end

local function skip(node, s, now)
  s[ST] = 'skipped'
  s[FINISHED] = now
  put(node, s)
  bump('remaining', -1)
end

-- Tell the children of a finished node its outcome ('ok', 'fail', 'skip'); cascade skips.
-- A child whose when= condition is this node is skipped when it returned the other bool.
-- `value` is the node's output JSON when the caller holds it.
local function settle(node, outcome, value, now, res)
  local stack, top = {node, outcome}, 2
  while top > 0 do
    local parent, result = stack[top - 1], stack[top]
    top = top - 2
    for _, child in ipairs(nodes_of(topo(parent), R_CHILDREN)) do
      local cs = get(child)
      if cs and cs[ST] == 'pending' then
        local t = topo(child)
        local taken = true
        if result == 'ok' and t[R_WHEN] ~= '' and string.sub(t[R_WHEN], 1, -3) == parent then
          local wanted = 'false'
          if string.sub(t[R_WHEN], -1) == '1' then wanted = 'true' end
          local got = value
          if parent ~= node or got == nil then got = redis.call('HGET', K.out, parent) end
          taken = got == wanted
        end
        if not taken then
          skip(child, cs, now)
          stack[top + 1], stack[top + 2], top = child, 'skip', top + 2
        else
          local slot = OK
          if result == 'fail' then slot = FAIL elseif result == 'skip' then slot = SKIP end
          cs[slot] = istr(num(cs[slot]) + 1)
          local rule = t[R_RULE]
          local d = decide(rule, num(t[R_NP]), num(cs[OK]), num(cs[FAIL]), num(cs[SKIP]))
          if d == 'ready' then
            queue(child, cs, now, res)
          elseif d == 'skip' then
            skip(child, cs, now)
            stack[top + 1], stack[top + 2], top = child, skip_outcome(rule, num(cs[FAIL])), top + 2
          else
            put(child, cs)
          end
        end
      end
    end
  end
end

-- Running -> back among the run's due nodes at `at` (its state, set by the caller: queued,
-- retrying or waiting), holding no worker and no lease.
local function requeue(node, s, at)
  s[OWN] = ''
  put(node, s)
  redis.call('ZREM', K.lease, node)
  redis.call('ZADD', K.due, at, node)
  bump('running', -1)
  bump('queued', 1)
end

-- Running -> a final state: not running any more, lease gone.
local function release(node, s, status, now)
  s[ST] = status
  s[OWN] = ''
  s[FINISHED] = now
  put(node, s)
  redis.call('ZREM', K.lease, node)
end

-- A node (not an item) completed: count it, mark the failures it handled, settle.
local function completed(node, value, now, res)
  bump('running', -1)
  bump('remaining', -1)
  bump('n_ok', 1)
  if HANDLER[topo(node)[R_RULE]] then
    for _, parent in ipairs(nodes_of(topo(node), R_PARENTS)) do
      local ps = get(parent)
      if ps and ps[ST] == 'failed' and ps[HANDLED] ~= '1' then
        ps[HANDLED] = '1'
        put(parent, ps)
        bump('failed', -1)
      end
    end
  end
  settle(node, 'ok', value, now, res)
end

local function fail_node(node, s, error, now, res, was_running)
  redis.call('HSET', K.err, node, error)
  release(node, s, 'failed', now)
  if was_running then bump('running', -1) end
  bump('remaining', -1)
  bump('failed', 1)
  redis.call('HSETNX', K.run, 'first_error', node)
  settle(node, 'fail', nil, now, res)
end

local function cancel_node(node, s, now)
  release(node, s, 'cancelled', now)
  bump('running', -1)
  if not map_of(node) then bump('remaining', -1) end
end

-- One item of map node m finished (completed, or failed under all_done): O(1). After the
-- last one, the map node is queued again: its worker gathers the results in short reads
-- and completes it (no script ever walks every item).
local function item_done(m, now, res)
  local ms = get(m)
  if not ms or ms[ST] ~= 'running' then return end
  ms[DONE] = istr(num(ms[DONE]) + 1)
  local n, nxt = num(ms[NITEMS]), num(ms[NEXT])
  local item_s, item = nil, nil
  if nxt < n then
    ms[NEXT] = istr(nxt + 1)
    item = m .. '[' .. nxt .. ']'
    item_s = blank_state()
  end
  if num(ms[DONE]) >= n then
    ms[OWN] = ''
    bump('running', -1)
    queue(m, ms, now, res)
  else
    put(m, ms)
  end
  if item then queue(item, item_s, now, res) end
end

local function item_failed(m, item, s, error, now, res)
  redis.call('HSET', K.err, item, error)
  release(item, s, 'failed', now)
  bump('running', -1)
  local ms = get(m)
  if topo(m)[R_RULE] == 'all_done' then
    item_done(m, now, res)
  elseif ms and ms[ST] == 'running' then
    local prefix = m .. '['
    for _, other in ipairs(redis.call('ZRANGE', K.due, 0, -1)) do
      if string.sub(other, 1, #prefix) == prefix then
        local os = get(other)
        if os then
          os[ST] = 'cancelled'
          put(other, os)
        end
        redis.call('ZREM', K.due, other)
        bump('queued', -1)
      end
    end
    fail_node(m, ms, error, now, res, true)
  end
end

-- End the run if no node can change any more; returns its final status or ''.
local function maybe_finish(now, retention_ms)
  if R.status ~= 'pending' and R.status ~= 'running' and R.status ~= 'paused' then return '' end
  if R.remaining > 0 or R.running > 0 then return '' end
  local status = 'completed'
  if R.cancel then status = 'cancelled' elseif R.failed > 0 then status = 'failed' end
  R.status = status
  redis.call('HSET', K.run, 'status', status, 'finished_at', now)
  local level = 'error'
  if status == 'completed' then level = 'info' end
  log(now, level, 'run ' .. status, nil)
  save()
  LOGS = {}
  -- Waiters block on this stream with XREAD (a read command: read-only clients can wait).
  redis.call('XADD', K.done, 'MAXLEN', 1, '*', 'status', status)
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, retention_ms) end
  return status
end

-- Fencing: the node must be running and held by this token. Returns its state or nil.
local function held(node, token)
  local s = get(node)
  if s and s[ST] == 'running' and s[OWN] == token then return s end
  return nil
end

-- The start of a transition that settles a running node: ARGV[1] is the node, ARGV[2] the
-- token holding it (fencing), ARGV[nlogs] the number of the worker's log lines that follow
-- it. Loads the run and queues the lines; returns the node's state and the server's time,
-- or nil when the token does not hold the node.
local function settling(nlogs)
  local s = held(ARGV[1], ARGV[2])
  if not s then return nil end
  load_run()
  add_logs(nlogs + 1, tonumber(ARGV[nlogs]))
  return s, server_now()
end

-- The reply of a transition: {accepted, finished status or '', the run's completed and
-- failed node counts (for the global stats when it finished), #messages, messages...,
-- continuation claim...}.
local function reply(finished, res)
  local ok, failed = 0, 0
  if R then ok, failed = R.n_ok, R.failed end
  local out = {1, finished or '', ok, failed, #res / 4}
  for _, v in ipairs(res) do out[#out + 1] = v end
  if C and C.node then claim_data(C.node, C.state, C.known, C.value, out, false) end
  return out
end

-- Shared helpers of autoflow's Redis scripts. Every script touches only the keys of one
-- run (they share the hash tag {run_id}), passed in this order:
local K = {
  run = KEYS[1], st = KEYS[2], att = KEYS[3], cnt = KEYS[4], topo = KEYS[5], own = KEYS[6],
  lease = KEYS[7], due = KEYS[8], tm = KEYS[9], out = KEYS[10], err = KEYS[11],
  logs = KEYS[12], done = KEYS[13], order = KEYS[14], iv = KEYS[15],
}
-- Items of a .map are fields "M[i]" of the same hashes; their item values live in K.iv.

local function split(s)
  local t = {}
  if s and s ~= '' then
    for x in string.gmatch(s, '[^,]+') do t[#t + 1] = x end
  end
  return t
end

-- The server's clock: scripts run one at a time, so times stamped with it follow the
-- order in which transitions happened, whichever worker sent them.
local function server_now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end

local function num(v)
  return tonumber(v) or 0
end

-- The map node of an item "M[i]", or nil for a plain node.
local function map_of(node)
  return string.match(node, '^(.+)%[%d+%]$')
end

-- Mirror of autoflow.engine.planner.decide: 'ready', 'skip' or 'wait'.
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

-- Mirror of autoflow.engine.planner.skip_outcome.
local function skip_outcome(rule, fail)
  if fail > 0 and (rule == 'all_success' or rule == 'none_failed' or rule == 'one_success') then
    return 'fail'
  end
  return 'skip'
end

local HANDLER = {one_failed = true, all_failed = true, all_done = true}

local function rule_of(node)
  return redis.call('HGET', K.topo, node .. '|r') or 'all_success'
end

local function log(now, level, message, node)
  redis.call('RPUSH', K.logs, cjson.encode({ts = tonumber(now), level = level, message = message, node_id = node}))
end

local function push_logs(first, count)
  for i = first, first + count - 1 do redis.call('RPUSH', K.logs, ARGV[i]) end
end

local function prio(node)
  local base = map_of(node) or node
  return num(redis.call('HGET', K.run, 'priority')) + num(redis.call('HGET', K.topo, base .. '|pr'))
end

-- What a child receives from a parent: output, error (failed) or nil (skipped).
local function parent_value(node)
  local st = redis.call('HGET', K.st, node)
  if st == 'completed' then return redis.call('HGET', K.out, node) end
  if st == 'failed' then return redis.call('HGET', K.err, node) end
  return false
end

-- Append a message (node, attempt, priority, eta) to a reply.
local function ready(res, node, attempt, eta)
  res[#res + 1] = node
  res[#res + 1] = attempt
  res[#res + 1] = prio(node)
  res[#res + 1] = eta or ''
end

local function queue(node, now, res)
  redis.call('HSET', K.st, node, 'queued')
  redis.call('ZADD', K.due, now, node)
  redis.call('HINCRBY', K.run, 'queued', 1)
  ready(res, node, num(redis.call('HGET', K.att, node)), '')
end

local function skip(node, now)
  redis.call('HSET', K.st, node, 'skipped')
  redis.call('HSET', K.tm, node .. '|f', now)
  redis.call('HINCRBY', K.run, 'remaining', -1)
end

-- Tell the children of a finished node its outcome ('ok', 'fail', 'skip'); cascade skips.
-- A child whose when= condition is this node is skipped when it returned the other bool.
local function settle(node, outcome, now, res)
  local stack, outs = {node}, {outcome}
  while #stack > 0 do
    local parent, result = table.remove(stack), table.remove(outs)
    for _, child in ipairs(split(redis.call('HGET', K.topo, parent .. '|c'))) do
      if redis.call('HGET', K.st, child) == 'pending' then
        local when = redis.call('HGET', K.topo, child .. '|w')
        local taken = true
        if result == 'ok' and when and string.sub(when, 1, -3) == parent then
          local wanted = 'false'
          if string.sub(when, -1) == '1' then wanted = 'true' end
          taken = redis.call('HGET', K.out, parent) == wanted
        end
        if not taken then
          skip(child, now)
          stack[#stack + 1] = child
          outs[#outs + 1] = 'skip'
        else
          redis.call('HINCRBY', K.cnt, child .. '|' .. result, 1)
          local c = redis.call('HMGET', K.cnt, child .. '|ok', child .. '|fail', child .. '|skip', child .. '|np')
          local rule = rule_of(child)
          local d = decide(rule, num(c[4]), num(c[1]), num(c[2]), num(c[3]))
          if d == 'ready' then
            queue(child, now, res)
          elseif d == 'skip' then
            skip(child, now)
            stack[#stack + 1] = child
            outs[#outs + 1] = skip_outcome(rule, num(c[2]))
          end
        end
      end
    end
  end
end

local function release(node, now)
  redis.call('HDEL', K.own, node)
  redis.call('ZREM', K.lease, node)
  redis.call('HSET', K.tm, node .. '|f', now)
end

-- A node (not an item) completed: count it, mark the failures it handled, settle.
local function completed(node, now, res)
  redis.call('HINCRBY', K.run, 'running', -1)
  redis.call('HINCRBY', K.run, 'remaining', -1)
  redis.call('HINCRBY', K.run, 'n_ok', 1)
  if HANDLER[rule_of(node)] then
    for _, parent in ipairs(split(redis.call('HGET', K.topo, node .. '|p'))) do
      if redis.call('HGET', K.st, parent) == 'failed' and redis.call('HSETNX', K.cnt, parent .. '|h', 1) == 1 then
        redis.call('HINCRBY', K.run, 'failed', -1)
      end
    end
  end
  settle(node, 'ok', now, res)
end

local function fail_node(node, error, now, res)
  redis.call('HSET', K.st, node, 'failed')
  redis.call('HSET', K.err, node, error)
  release(node, now)
  redis.call('HINCRBY', K.run, 'running', -1)
  redis.call('HINCRBY', K.run, 'remaining', -1)
  redis.call('HINCRBY', K.run, 'failed', 1)
  redis.call('HSETNX', K.run, 'first_error', node)
  settle(node, 'fail', now, res)
end

local function cancel_node(node, now)
  redis.call('HSET', K.st, node, 'cancelled')
  release(node, now)
  redis.call('HINCRBY', K.run, 'running', -1)
  if not map_of(node) then redis.call('HINCRBY', K.run, 'remaining', -1) end
end

-- One item of map node m finished (completed, or failed under all_done): O(1). After the
-- last one, the map node is queued again: its worker gathers the results in short reads
-- and completes it (no script ever walks every item).
local function item_done(m, now, res)
  if redis.call('HGET', K.st, m) ~= 'running' then return end
  local done = redis.call('HINCRBY', K.cnt, m .. '|done', 1)
  local n, nxt = num(redis.call('HGET', K.cnt, m .. '|n')), num(redis.call('HGET', K.cnt, m .. '|next'))
  if nxt < n then
    redis.call('HINCRBY', K.cnt, m .. '|next', 1)
    local item = m .. '[' .. nxt .. ']'
    redis.call('HSET', K.att, item, 1)
    queue(item, now, res)
  end
  if done < n then return end
  redis.call('HDEL', K.own, m)
  redis.call('HINCRBY', K.run, 'running', -1)
  queue(m, now, res)
end

local function item_failed(m, item, error, now, res)
  redis.call('HSET', K.st, item, 'failed')
  redis.call('HSET', K.err, item, error)
  release(item, now)
  redis.call('HINCRBY', K.run, 'running', -1)
  if rule_of(m) == 'all_done' then
    item_done(m, now, res)
  elseif redis.call('HGET', K.st, m) == 'running' then
    local prefix = m .. '['
    for _, other in ipairs(redis.call('ZRANGE', K.due, 0, -1)) do
      if string.sub(other, 1, #prefix) == prefix then
        redis.call('HSET', K.st, other, 'cancelled')
        redis.call('ZREM', K.due, other)
        redis.call('HINCRBY', K.run, 'queued', -1)
      end
    end
    fail_node(m, error, now, res)
  end
end

-- End the run if no node can change any more; returns its final status or ''.
local function maybe_finish(now, retention_ms)
  local r = redis.call('HMGET', K.run, 'status', 'remaining', 'running', 'failed', 'cancel')
  if r[1] ~= 'pending' and r[1] ~= 'running' and r[1] ~= 'paused' then return '' end
  if num(r[2]) > 0 or num(r[3]) > 0 then return '' end
  local status = 'completed'
  if r[5] == '1' then status = 'cancelled' elseif num(r[4]) > 0 then status = 'failed' end
  redis.call('HSET', K.run, 'status', status, 'finished_at', now)
  local level = 'error'
  if status == 'completed' then level = 'info' end
  log(now, level, 'run ' .. status, nil)
  -- Waiters block on this stream with XREAD (a read command: read-only clients can wait).
  redis.call('XADD', K.done, 'MAXLEN', 1, '*', 'status', status)
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, retention_ms) end
  return status
end

-- Fencing: the node must be running and held by this token.
local function held(node, token)
  return redis.call('HGET', K.st, node) == 'running' and redis.call('HGET', K.own, node) == token
end

-- Shared helpers of autoflow's Redis scripts. Every script touches only the keys of one
-- run (they share the hash tag {run_id}), passed in this order:
local K = {
  run = KEYS[1], st = KEYS[2], att = KEYS[3], cnt = KEYS[4], topo = KEYS[5], own = KEYS[6],
  lease = KEYS[7], due = KEYS[8], tm = KEYS[9], out = KEYS[10], err = KEYS[11],
  logs = KEYS[12], done = KEYS[13], order = KEYS[14],
}

local function split(s)
  local t = {}
  if s and s ~= '' then
    for x in string.gmatch(s, '[^,]+') do t[#t + 1] = x end
  end
  return t
end

local function num(v)
  return tonumber(v) or 0
end

-- Mirror of autoflow.engine.planner.decide: 'ready', 'skip' or 'wait'.
local function decide(rule, total, ok, fail, skip)
  local all = (ok + fail + skip) == total
  if rule == 'all_success' then
    if fail > 0 or skip > 0 then return 'skip' end
    if all then return 'ready' end
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

local function log(now, level, message, node)
  redis.call('RPUSH', K.logs, cjson.encode({ts = tonumber(now), level = level, message = message, node_id = node}))
end

local function push_logs(first, count)
  for i = first, first + count - 1 do redis.call('RPUSH', K.logs, ARGV[i]) end
end

local function prio(node)
  return num(redis.call('HGET', K.run, 'priority')) + num(redis.call('HGET', K.topo, node .. '|pr'))
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

-- Tell the children of a finished node its outcome ('ok', 'fail', 'skip'); cascade skips.
local function settle(node, outcome, now, res)
  local stack, outs = {node}, {outcome}
  while #stack > 0 do
    local parent, result = table.remove(stack), table.remove(outs)
    for _, child in ipairs(split(redis.call('HGET', K.topo, parent .. '|c'))) do
      if redis.call('HGET', K.st, child) == 'pending' then
        redis.call('HINCRBY', K.cnt, child .. '|' .. result, 1)
        local c = redis.call('HMGET', K.cnt, child .. '|ok', child .. '|fail', child .. '|skip', child .. '|np')
        local rule = redis.call('HGET', K.topo, child .. '|r') or 'all_success'
        local d = decide(rule, num(c[4]), num(c[1]), num(c[2]), num(c[3]))
        if d == 'ready' then
          queue(child, now, res)
        elseif d == 'skip' then
          redis.call('HSET', K.st, child, 'skipped')
          redis.call('HSET', K.tm, child .. '|f', now)
          redis.call('HINCRBY', K.run, 'remaining', -1)
          stack[#stack + 1] = child
          outs[#outs + 1] = 'skip'
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
  redis.call('HINCRBY', K.run, 'remaining', -1)
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
  redis.call('DEL', K.done)
  redis.call('RPUSH', K.done, status)
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, retention_ms) end
  return status
end

-- Fencing: the node must be running and held by this token.
local function held(node, token)
  return redis.call('HGET', K.st, node) == 'running' and redis.call('HGET', K.own, node) == token
end

-- ARGV: (unused), retention_ms. Nodes not running -> cancelled; nodes waiting on items or a
-- child run end at once; the run ends when no node runs any more.
-- Reply: {status, finished status if this call ended the run else '', completed and
-- failed node counts, child runs to cancel...}
load_run()
if not R.status then return {'gone', '', 0, 0} end
if R.status ~= 'pending' and R.status ~= 'running' and R.status ~= 'paused' then return {R.status, '', 0, 0} end
redis.call('HSET', K.run, 'cancel', '1')
R.cancel = true
local now = server_now()
local WAITING = {pending = true, queued = true, retrying = true, waiting = true}
local children, n = {}, 0
for _, node in ipairs(redis.call('LRANGE', K.order, 0, -1)) do
  local s = get(node)
  if s and WAITING[s[ST]] then
    s[ST] = 'cancelled'
    s[FINISHED] = now
    put(node, s)
    n = n + 1
  elseif s and s[ST] == 'running' then
    local owner = s[OWN]
    if string.sub(owner, 1, 5) == '@sub:' then children[#children + 1] = string.sub(owner, 6) end
    if string.sub(owner, 1, 1) == '@' then cancel_node(node, s, now) end
  end
end
for _, node in ipairs(redis.call('ZRANGE', K.due, 0, -1)) do
  if map_of(node) then
    local s = get(node)
    if s and WAITING[s[ST]] then
      s[ST] = 'cancelled'
      put(node, s)
    end
  end
end
redis.call('DEL', K.due)
R.queued = 0
bump('remaining', -n)
log(now, 'warn', 'cancellation requested', nil)
local fin = maybe_finish(now, ARGV[2])
save()
local res = {R.status, fin, R.n_ok, R.failed}
for _, child in ipairs(children) do res[#res + 1] = child end
return res

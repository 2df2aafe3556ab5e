-- ARGV: lease (seconds), node1, token1, node2, token2, ... Returns {cancel flag, lost nodes...}.
-- Leases are extended on the server's clock.
server_now()
local until_ = server_later(tonumber(ARGV[1]))
local res = {redis.call('HGET', K.run, 'cancel') or '0'}
for i = 2, #ARGV, 2 do
  local node, token = ARGV[i], ARGV[i + 1]
  if held(node, token) then
    redis.call('ZADD', K.lease, until_, node)
  else
    res[#res + 1] = node
  end
end
return res

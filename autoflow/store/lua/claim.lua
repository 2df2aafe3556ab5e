-- ARGV: node, attempt, token, lease (seconds). Queued/retrying/waiting -> running, held by
-- `token` until the server's clock passes now + lease (a worker's clock never shortens it).
-- Reply: false, or the claim data (see claim_data in lib_flow.lua).
local node, attempt, token = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local s = get(node)
if not s then return false end
if s[ST] ~= 'queued' and s[ST] ~= 'retrying' and s[ST] ~= 'waiting' then return false end
if num(s[ATT]) ~= attempt then return false end
load_run()
if R.status ~= 'running' or R.cancel then return false end
local now = server_now()
redis.call('ZREM', K.due, node)
bump('queued', -1)
take(node, s, token, server_later(tonumber(ARGV[4])), now)
local res = {}
claim_data(node, s, nil, nil, res, true)
save()
return res

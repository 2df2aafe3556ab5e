-- ARGV: node, token, until, waiting ('1': a durable delay, '0': a rate-limit pause), nlogs, logs...
-- Running -> waiting/queued until `until`, holding no worker; the message comes back then.
local node, token, until_ = ARGV[1], ARGV[2], ARGV[3]
local s = held(node, token)
if not s then return {0} end
load_run()
add_logs(6, tonumber(ARGV[5]))
if ARGV[4] == '1' then
  s[ST] = 'waiting'
  s[WAKE] = until_
else
  s[ST] = 'queued'
end
requeue(node, s, until_)
local res = {}
ready(res, node, s[ATT], until_)
save()
return reply('', res)

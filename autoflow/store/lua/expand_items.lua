-- ARGV: node, token, first index, items (JSON)... Store one chunk of a map node's items
-- (fenced by the claim), so that no single script holds Redis long for a big .map.
local node, token, first = ARGV[1], ARGV[2], tonumber(ARGV[3])
if not held(node, token) then return 0 end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = node .. '[' .. (first + i - 4) .. ']'
  fields[#fields + 1] = ARGV[i]
end
if #fields > 0 then redis.call('HSET', K.iv, unpack(fields)) end
return 1

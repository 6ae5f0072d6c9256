-- live: the registrations not expired at now; removes the others.
-- KEYS: 1 dialers (HASH node -> expiry ms .. '\t' .. JSON)
-- ARGV: 1 now_ms
-- Returns the JSON of each live node.
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sep = string.find(v, '\t', 1, true)
  local expiry = sep and tonumber(string.sub(v, 1, sep - 1))
  if expiry and expiry > now then
    out[#out + 1] = string.sub(v, sep + 1)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out

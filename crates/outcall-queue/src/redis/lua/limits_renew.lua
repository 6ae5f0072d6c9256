-- renew: keeps a call's slots for hold ms from now.
-- KEYS: 1 campaign calls, 2 trunk calls
-- ARGV: 1 call id, 2 hold ms
-- Returns 1 if both slots were still held (a lost slot is not taken again).
local hold = tonumber(ARGV[2])
local expiry = string.format('%d', now_ms + hold)
local both = 1
for i = 1, 2 do
  prune(KEYS[i])
  if redis.call('ZSCORE', KEYS[i], ARGV[1]) then
    redis.call('ZADD', KEYS[i], expiry, ARGV[1])
    keep(KEYS[i], hold)
  else
    both = 0
  end
end
return both

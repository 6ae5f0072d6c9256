-- release: frees the call's slots.
-- KEYS: 1 campaign calls, 2 trunk calls
-- ARGV: 1 call id
-- Returns how many live slots were freed.
local freed = 0
for i = 1, 2 do
  local s = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if s then
    redis.call('ZREM', KEYS[i], ARGV[1])
    if tonumber(s) > now_ms then
      freed = freed + 1
    end
  end
end
return freed

-- claim: moves due -> ready for entries due at now, then pops the best and leases them.
-- KEYS: 1 due, 2 ready, 3 tasks, 4 leases, 5 owners, 6 clock
-- ARGV: 1 now_ms, 2 max, 3 node, 4 lease expiry ms, 5 token prefix, 6 move batch,
--       7 clock ttl ms
-- Returns contact, 'priority:due' pairs; each token is the prefix followed by the contact.
local now = tonumber(ARGV[1])
advance_clock(KEYS[6], now, ARGV[1], ARGV[7])
local moved = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[6])
for i = 1, #moved do
  local id = moved[i]
  redis.call('ZREM', KEYS[1], id)
  local t = redis.call('HGET', KEYS[3], id)
  if t then
    local prio, due = parse(t)
    redis.call('ZADD', KEYS[2], string.format('%d', -prio), member(due, id))
  end
end
local out = {}
local popped = redis.call('ZPOPMIN', KEYS[2], ARGV[2])
for i = 1, #popped, 2 do
  local id = string.sub(popped[i], 17)
  local t = redis.call('HGET', KEYS[3], id)
  if t then
    redis.call('ZADD', KEYS[4], ARGV[4], id)
    redis.call('HSET', KEYS[5], id, ARGV[5] .. id .. '\t' .. ARGV[3])
    out[#out + 1] = id
    out[#out + 1] = t
  end
end
return out

-- reap: leases expired at now go back to ready, due now.
-- KEYS: 1 due, 2 ready, 3 tasks, 4 leases, 5 owners, 6 clock
-- ARGV: 1 now_ms, 2 most leases to reap, 3 clock ttl ms
-- Returns how many leases expired, then contact, priority, node of the dead lease triples.
local now = tonumber(ARGV[1])
advance_clock(KEYS[6], now, ARGV[1], ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {tostring(#expired)}
for i = 1, #expired do
  local id = expired[i]
  redis.call('ZREM', KEYS[4], id)
  local owner = redis.call('HGET', KEYS[5], id)
  redis.call('HDEL', KEYS[5], id)
  local t = redis.call('HGET', KEYS[3], id)
  if t then
    local prio, _, p = parse(t)
    redis.call('HSET', KEYS[3], id, p .. ':' .. ARGV[1])
    redis.call('ZADD', KEYS[2], string.format('%d', -prio), member(now, id))
    local node = ''
    if owner then
      local sep = string.find(owner, '\t', 1, true)
      if sep then
        node = string.sub(owner, sep + 1)
      end
    end
    out[#out + 1] = id
    out[#out + 1] = p
    out[#out + 1] = node
  end
end
return out

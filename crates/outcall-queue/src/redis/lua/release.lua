-- release: gives the task back with a new due time if the token still holds it.
-- KEYS: 1 due, 2 ready, 3 tasks, 4 leases, 5 owners, 6 clock
-- ARGV: 1 contact, 2 token, 3 due_ms
if not holds(KEYS[5], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local t = redis.call('HGET', KEYS[3], ARGV[1])
if not t then
  return 0
end
local prio, _, p = parse(t)
redis.call('HSET', KEYS[3], ARGV[1], p .. ':' .. ARGV[3])
enqueue(KEYS[1], KEYS[2], read_clock(KEYS[6]), ARGV[1], prio, tonumber(ARGV[3]))
return 1

-- remove: drops a task whether queued or leased.
-- KEYS: 1 due, 2 ready, 3 tasks, 4 leases, 5 owners
-- ARGV: 1 contact
local t = redis.call('HGET', KEYS[3], ARGV[1])
if not t then
  return 0
end
local _, due = parse(t)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], member(due, ARGV[1]))
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1

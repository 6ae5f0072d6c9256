-- ack: the task is done; removed if the token still holds it.
-- KEYS: 1 tasks, 2 leases, 3 owners
-- ARGV: 1 contact, 2 token
if not holds(KEYS[3], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1

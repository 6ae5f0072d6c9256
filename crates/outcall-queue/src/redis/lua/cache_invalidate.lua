-- cache invalidate: drops the value, bumps its generation (a load in flight will not store
-- what it read before) and tells every node.
-- KEYS: 1 value, 2 generation (same hash tag)
-- ARGV: 1 generation ttl ms, 2 channel, 3 key
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])

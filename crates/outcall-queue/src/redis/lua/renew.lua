-- renew: moves the lease's expiry if the token still holds it.
-- KEYS: 1 leases, 2 owners
-- ARGV: 1 contact, 2 token, 3 new expiry ms
if not holds(KEYS[2], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1

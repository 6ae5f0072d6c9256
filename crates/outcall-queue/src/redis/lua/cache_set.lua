-- cache set: stores a loaded value unless the key was invalidated since the load began.
-- KEYS: 1 value, 2 generation (same hash tag)
-- ARGV: 1 generation read before loading ('0': none), 2 JSON, 3 ttl ms
local g = redis.call('GET', KEYS[2]) or '0'
if g ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1

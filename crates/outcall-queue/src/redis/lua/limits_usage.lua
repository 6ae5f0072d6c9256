-- usage: calls holding a slot now.
-- KEYS: 1 campaign calls, 2 trunk calls
-- Returns {campaign, trunk}.
return {
  redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now_ms), '+inf'),
  redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%d', now_ms), '+inf'),
}

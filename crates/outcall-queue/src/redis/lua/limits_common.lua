-- Shared by the limiter scripts (prepended to each).
--
-- calls:c:<campaign>, calls:t:<trunk>  ZSET call id, score hold expiry ms: calls in progress
-- pace:c:<campaign>, pace:t:<trunk>    STRING GCRA theoretical arrival time, microseconds
-- Every time comes from the Redis server's clock (TIME), the one clock all nodes share.

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now_us / 1000)

-- forgets the calls whose hold expired (their node died or stopped renewing)
local function prune(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now_ms))
end

-- the key outlives its longest hold, and no more
local function keep(key, hold_ms)
  if redis.call('PTTL', key) < hold_ms then
    redis.call('PEXPIRE', key, string.format('%d', hold_ms))
  end
end


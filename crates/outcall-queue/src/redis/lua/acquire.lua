-- acquire: a slot in the campaign and one on the trunk, both or neither.
-- KEYS: 1 campaign calls, 2 trunk calls, 3 campaign pace, 4 trunk pace
-- ARGV: 1 call id, 2 hold ms, 3 campaign max concurrent (-1: none), 4 trunk max concurrent,
--       5 campaign interval us (0: none), 6 campaign burst, 7 trunk interval us,
--       8 trunk burst
-- Returns {'granted'} or {reason, retry after us (-1: none)}.
local call = ARGV[1]
local hold = tonumber(ARGV[2])
prune(KEYS[1])
prune(KEYS[2])
local c_held = redis.call('ZSCORE', KEYS[1], call)
local t_held = redis.call('ZSCORE', KEYS[2], call)
if not (c_held and t_held) then
  local c_max = tonumber(ARGV[3])
  local t_max = tonumber(ARGV[4])
  if c_max >= 0 and not c_held and redis.call('ZCARD', KEYS[1]) >= c_max then
    return {'campaign_concurrency', '-1'}
  end
  if t_max >= 0 and not t_held and redis.call('ZCARD', KEYS[2]) >= t_max then
    return {'trunk_concurrency', '-1'}
  end
  -- GCRA: nil if unlimited, the new arrival time if a call may start now, else false and
  -- the wait
  local function pace(key, interval, burst)
    if interval <= 0 then
      return nil, 0
    end
    local v = redis.call('GET', key)
    local tat = now_us
    if v then
      tat = math.max(tonumber(v), now_us)
    end
    local ahead = tat - now_us - (burst - 1) * interval
    if ahead > 0 then
      return false, ahead
    end
    return tat + interval, 0
  end
  local c_tat, c_wait = pace(KEYS[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
  if c_tat == false then
    return {'campaign_rate', string.format('%d', math.ceil(c_wait))}
  end
  local t_tat, t_wait = pace(KEYS[4], tonumber(ARGV[7]), tonumber(ARGV[8]))
  if t_tat == false then
    return {'trunk_rate', string.format('%d', math.ceil(t_wait))}
  end
  if c_tat then
    redis.call('SET', KEYS[3], string.format('%.17g', c_tat), 'PX',
      string.format('%d', math.ceil((c_tat - now_us) / 1000) + 1000))
  end
  if t_tat then
    redis.call('SET', KEYS[4], string.format('%.17g', t_tat), 'PX',
      string.format('%d', math.ceil((t_tat - now_us) / 1000) + 1000))
  end
end
local expiry = string.format('%d', now_ms + hold)
redis.call('ZADD', KEYS[1], expiry, call)
redis.call('ZADD', KEYS[2], expiry, call)
keep(KEYS[1], hold)
keep(KEYS[2], hold)
return {'granted'}

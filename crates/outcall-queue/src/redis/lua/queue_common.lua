-- Shared by the queue scripts (prepended to each).
--
-- tasks  HASH  contact -> 'priority:due_ms'    every task queued or leased
-- due    ZSET  contact, score due_ms           waiting for its time (the timing wheel)
-- ready  ZSET  member(due, contact), score -priority
--              due and waiting: ZPOPMIN takes the highest priority, then (members of equal
--              score sort as strings) the earliest due
-- leases ZSET  contact, score lease expiry ms
-- owners HASH  contact -> token .. '\t' .. node
-- clock  STRING the latest now_ms a claim or reap has seen: a task pushed or released with
--              a due time at or before it is ready at once

local function member(due, id)
  if due < 0 then
    due = 0
  elseif due > 999999999999999 then
    due = 999999999999999
  end
  return string.format('%015d:', due) .. id
end

-- 'priority:due' -> priority, due, priority as written
local function parse(t)
  local sep = string.find(t, ':', 2, true)
  local p = string.sub(t, 1, sep - 1)
  return tonumber(p), tonumber(string.sub(t, sep + 1)), p
end

local function read_clock(key)
  local c = redis.call('GET', key)
  if c then
    return tonumber(c)
  end
  return nil
end

local function advance_clock(key, now, now_arg, ttl)
  local clock = read_clock(key)
  if not clock or now > clock then
    redis.call('SET', key, now_arg, 'PX', ttl)
  end
end

local function enqueue(due_key, ready_key, clock, id, prio, due)
  if clock and due <= clock then
    redis.call('ZADD', ready_key, string.format('%d', -prio), member(due, id))
  else
    redis.call('ZADD', due_key, string.format('%d', due), id)
  end
end

-- whether `token` holds the lease on `id`
local function holds(owners_key, id, token)
  local v = redis.call('HGET', owners_key, id)
  return v and string.sub(v, 1, #token + 1) == token .. '\t'
end


-- push: adds the tasks not queued or leased yet.
-- KEYS: 1 due, 2 ready, 3 tasks, 4 clock
-- ARGV: contact, priority, due_ms triples
-- Returns how many were added.
local clock = read_clock(KEYS[4])
local added = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[3], id, ARGV[i + 1] .. ':' .. ARGV[i + 2]) == 1 then
    added = added + 1
    enqueue(KEYS[1], KEYS[2], clock, id, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
  end
end
return added

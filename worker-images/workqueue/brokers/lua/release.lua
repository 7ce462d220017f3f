-- Give back leased items that were never started, to the front of the queue and in order,
-- without charging a run (used on SIGTERM and when a coarse worker leased extra).
-- ARGV: worker, id1, id2, ...
require_state()
local worker = ARGV[1]
for i = #ARGV, 2, -1 do
  local id = ARGV[i]
  if owned_by(id, worker) then
    unlease(id)
    redis.call('LPUSH', pending, id)
  end
end
return 1

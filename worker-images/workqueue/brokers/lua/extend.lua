-- Heartbeat: push the lease expiry of items `worker` is running to now + lease_ms.
-- ARGV: worker, lease_ms, id1, id2, ...   Returns the ids whose lease was lost.
require_state()
local worker, lease_ms = ARGV[1], tonumber(ARGV[2])
local expiry = now_ms() + lease_ms
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if owned_by(id, worker) then
    redis.call('ZADD', leases, 'XX', expiry, id)
  else
    lost[#lost + 1] = id
  end
end
return lost

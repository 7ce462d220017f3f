-- Put every dead-lettered item back at the end of the queue with fresh attempts, in one step,
-- so it is safe while workers run. Its record says 'pending' until it settles again (with the
-- runs of every round), so the report and `status` agree with the queue meanwhile. ARGV: round. A round above 0 is applied once: the state
-- records it, and a seeder re-run for the same round moves nothing (returns -1).
-- Returns how many items went back.
require_state()
local round = tonumber(ARGV[1])
if round > 0 then
  if tonumber(redis.call('HGET', state, 'retry_round') or '0') >= round then
    return -1
  end
  redis.call('HSET', state, 'retry_round', round)
end
local moved = 0
for _, id in ipairs(redis.call('HKEYS', dead)) do
  local entry = cjson.decode(redis.call('HGET', dead, id))
  redis.call('HSET', items, id, entry.payload)
  redis.call('HDEL', dead, id)
  redis.call('HDEL', attempts, id)
  local rec = redis.call('HGET', report, id)
  if rec then
    local record = cjson.decode(rec)
    redis.call('HSET', report, id, cjson.encode({o = 'pending', a = record.a, w = record.w,
                                                 t = now_ms() / 1000}))
  end
  redis.call('RPUSH', pending, id)
  moved = moved + 1
end
return moved

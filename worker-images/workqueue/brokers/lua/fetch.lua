-- Mark the previous batch's successes done (as ack.lua), reap expired leases, then lease up to
-- `count` items to `worker`.
-- ARGV: worker, count, lease_ms, max_attempts, then the ids done (possibly none)
-- Returns {acked, 'items', {id1, payload1, attempt1, ...}}, or {acked, 'drained'} once seeding is
-- complete and nothing is pending or leased, or {acked, 'empty'} while other workers still hold
-- leases; `acked` holds one 1 (done) or 0 (lease lost) per id done.
local worker, count, lease_ms, max_attempts = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local acked = mark_done(worker, 5)
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  unlease(id)
  retry_or_bury(id, 'lease expired: its worker stopped sending heartbeats (killed, evicted or lost with its node)', max_attempts)
end
local out = {}
while #out < count * 3 do
  local id = redis.call('LPOP', pending)
  if not id then break end
  local payload = redis.call('HGET', items, id)
  if payload then
    redis.call('ZADD', leases, now + lease_ms, id)
    redis.call('HSET', owners, id, worker)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = redis.call('HINCRBY', attempts, id, 1)
  end
end
if #out > 0 then
  return {acked, 'items', out}
end
if redis.call('HGET', state, 'complete') == '1' and redis.call('ZCARD', leases) == 0 then
  return {acked, 'drained'}
end
return {acked, 'empty'}

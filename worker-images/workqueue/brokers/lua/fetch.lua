-- Reap expired leases, then lease up to `count` items to `worker`.
-- ARGV: worker, count, lease_ms, max_attempts
-- Returns {'items', {id1, payload1, attempt1, ...}}, or {'drained'} once seeding is complete and
-- nothing is pending or leased, or {'empty'} while other workers still hold leases.
local worker, count, lease_ms, max_attempts = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
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
  return {'items', out}
end
if redis.call('HGET', state, 'complete') == '1' and redis.call('ZCARD', leases) == 0 then
  return {'drained'}
end
return {'empty'}

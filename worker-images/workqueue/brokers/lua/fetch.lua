-- Mark the previous batch's successes done (as ack.lua), reap expired leases, then lease up to
-- `count` items to `worker`.
-- ARGV: worker, count, lease_ms, max_attempts, run, then the items done as id, record pairs
-- (possibly none). `run` is the run this worker serves ('' for any).
-- Returns {acked, kind, extra}; `acked` holds one 1 (done) or 0 (lease lost) per id done, and
-- kind is one of:
--   'items'    extra = {id1, payload1, attempt1, ...}
--   'drained'  seeding is complete and nothing is pending, delayed or leased
--   'empty'    nothing to lease now; extra = 1 once seeding is complete (others hold leases,
--              or failed items wait out their retry delay)
--   'nostate'  no seeding has started, or the state is gone (the caller knows which)
--   'otherrun' the queue was seeded for another run; extra = that run
local worker, count, lease_ms, max_attempts, run =
  ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local seeded_run, complete = unpack(redis.call('HMGET', state, 'run', 'complete'))
if redis.call('EXISTS', state) == 0 then
  if #ARGV > 5 then
    require_state()
  end
  return {{}, 'nostate'}
end
if run ~= '' and seeded_run and seeded_run ~= run then
  return {{}, 'otherrun', seeded_run}
end
local acked = mark_done(worker, 6)
local now = now_ms()
-- Expired leases: the worker died (or stalled, or lost the broker for leaseSeconds). An item
-- it held alone was running: that run is charged. Items it held with others are not charged,
-- since only one of them ran: each becomes a suspect, leased alone from now on, so that one
-- which kills its worker again is found and charged by itself. The suspects go to the front.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 100)
for i = #expired, 1, -1 do
  local id = expired[i]
  local owner = redis.call('HGET', owners, id)
  local was_alone = redis.call('SISMEMBER', alone, id) == 1
  unlease(id)
  if was_alone then
    retry_or_bury(id, 'its worker died while running it (killed, OOM-killed, evicted or lost ' ..
      'with its node), or stopped renewing its lease for leaseSeconds', max_attempts, 0, nil,
      owner)
  else
    redis.call('SADD', suspects, id)
    redis.call('LPUSH', pending, id)
  end
end
-- Failed items whose retry delay is over join the end of the queue.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  redis.call('RPUSH', pending, id)
end
-- Lease up to `count` items; a suspect is leased alone, never in a batch.
local out = {}
while #out < count * 3 do
  local id = redis.call('LPOP', pending)
  if not id then break end
  local payload = redis.call('HGET', items, id)
  if payload then
    if redis.call('SISMEMBER', suspects, id) == 1 and #out > 0 then
      redis.call('LPUSH', pending, id)
      break
    end
    redis.call('ZADD', leases, now + lease_ms, id)
    redis.call('HSET', owners, id, worker)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = tonumber(redis.call('HGET', attempts, id) or '0') + 1
    if redis.call('SISMEMBER', suspects, id) == 1 then break end
  end
end
if #out == 3 then
  redis.call('SADD', alone, out[1])
end
if #out > 0 then
  return {acked, 'items', out}
end
if complete == '1' and redis.call('ZCARD', leases) == 0 and redis.call('ZCARD', delayed) == 0 then
  return {acked, 'drained'}
end
return {acked, 'empty', complete == '1' and 1 or 0}

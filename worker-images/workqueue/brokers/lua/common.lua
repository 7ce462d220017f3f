-- Prelude joined in front of every script in this folder (see brokers/redis.py).
-- KEYS, the same for every script, all in one hash slot ({queue}):
--   1 state     hash: cursor, fingerprint, total, run, complete, retried, done (the count of
--               items done; the report says which). It exists from the first seeding batch
--               on: a worker that finds it gone lost the queue (NOSTATE).
--   2 pending   list of ids, FIFO (RPUSH in, LPOP out)
--   3 leases    sorted set id -> lease expiry (ms, server clock)
--   4 owners    hash id -> worker id holding the lease
--   5 attempts  hash id -> runs charged: settled by a worker, or cut short while it ran alone
--   6 items     hash id -> payload, until the item is done or dead
--   7 errors    hash id -> last error of an item waiting for a retry
--   8 dead      hash id -> JSON {payload, error, attempts}
--   9 refused   string: why the seeder could not seed (read by workers from Python)
--  10 delayed   sorted set id -> when a failed item may run again (ms, server clock); it joins
--               `pending` once that time has come (fetch.lua)
--  11 report    hash id -> the record of how the settled item went (workqueue/report.py)
--  12 suspects  set of ids whose lease expired while leased with others: one of those tasks
--               may have killed its worker, so each is leased alone until it settles
--  13 alone     set of ids leased alone: a lease of these that expires charges its run
local state, pending, leases, owners, attempts, items, errors, dead, delayed, report, suspects,
  alone = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[10],
  KEYS[11], KEYS[12], KEYS[13]

-- The server's clock, in ms: every pod compares leases against one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Abort with NOSTATE unless the queue's state exists: a worker that holds leases and finds it
-- gone is talking to a broker that restarted empty or a queue that was purged.
local function require_state()
  if redis.call('EXISTS', state) == 0 then
    error({err = 'NOSTATE the queue state is gone'})
  end
end

local function owned_by(id, worker)
  return redis.call('HGET', owners, id) == worker
end

local function unlease(id)
  redis.call('ZREM', leases, id)
  redis.call('HDEL', owners, id)
  redis.call('SREM', alone, id)
end

-- An item settled for good (done or dead) leaves every per-item key.
local function forget(id)
  redis.call('HDEL', items, id)
  redis.call('HDEL', attempts, id)
  redis.call('HDEL', errors, id)
  redis.call('SREM', suspects, id)
end

-- Keep the record of a settled item. An item settled before, in an earlier retry-dead round,
-- adds that round's runs to its count.
local function store_record(id, rec)
  local before = redis.call('HGET', report, id)
  if before then
    local record = cjson.decode(rec)
    record.a = record.a + cjson.decode(before).a
    rec = cjson.encode(record)
  end
  redis.call('HSET', report, id, rec)
end

-- After a failed run, charge it; then dead-letter the item once max_attempts runs are
-- charged, else queue it again, at once or, with delay_ms above 0, once that long has passed.
-- `rec` is the worker's record of the run; without one (a worker that died while the item ran
-- alone), the record says what the server knows.
local function retry_or_bury(id, err, max_attempts, delay_ms, rec, owner)
  local runs = redis.call('HINCRBY', attempts, id, 1)
  if runs >= max_attempts then
    store_record(id, rec or cjson.encode({o = 'dead', a = runs, e = err, w = owner or '',
                                          t = now_ms() / 1000}))
    local payload = redis.call('HGET', items, id)
    redis.call('HSET', dead, id, cjson.encode({payload = payload, error = err, attempts = runs}))
    forget(id)
    return 'dead'
  end
  redis.call('HSET', errors, id, err)
  if delay_ms > 0 then
    redis.call('ZADD', delayed, now_ms() + delay_ms, id)
  else
    redis.call('RPUSH', pending, id)
  end
  redis.call('HINCRBY', state, 'retried', 1)
  return 'retry'
end

-- Mark the items in ARGV[first..], given as id, record pairs, done, each only if `worker` still
-- holds its lease. Returns one 1 (done) or 0 (lease lost) per id.
local function mark_done(worker, first)
  local out = {}
  for i = first, #ARGV, 2 do
    local id = ARGV[i]
    if owned_by(id, worker) then
      store_record(id, ARGV[i + 1])
      unlease(id)
      forget(id)
      redis.call('HINCRBY', state, 'done', 1)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  return out
end

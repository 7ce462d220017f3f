-- Append one seeding batch, atomically with the seed cursor, so a seeder killed at any point
-- and run again resumes where the last committed batch ended: each task is queued once.
-- ARGV: expected_cursor, fingerprint, total, run ('' for none), then one JSON array
-- [id1, payload1, id2, ...]: one argument instead of two per task, which the client would
-- encode one by one.
-- Returns the new cursor, or an error if another seeder moved the cursor or the list differs.
local expected, fingerprint, total, run = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local cursor = tonumber(redis.call('HGET', state, 'cursor') or '0')
local seen, seen_run = unpack(redis.call('HMGET', state, 'fingerprint', 'run'))
if (seen and seen ~= fingerprint) or (run ~= '' and seen_run and seen_run ~= run) then
  return redis.error_reply('SEEDCONFLICT queue already seeded from a different task list')
end
if cursor ~= expected then
  return redis.error_reply('SEEDCURSOR cursor is ' .. cursor .. ', expected ' .. expected)
end
local batch = cjson.decode(ARGV[5])
-- Written in slices: Lua's unpack() fails beyond a few thousand values.
local SLICE = 500
for first = 1, #batch, 2 * SLICE do
  local last = math.min(first + 2 * SLICE - 1, #batch)
  local ids = {}
  for i = first, last, 2 do
    ids[#ids + 1] = batch[i]
  end
  redis.call('HSET', items, unpack(batch, first, last))
  redis.call('RPUSH', pending, unpack(ids))
end
local added = #batch / 2
redis.call('HSET', state, 'cursor', cursor + added, 'fingerprint', fingerprint, 'total', total)
if run ~= '' then
  redis.call('HSET', state, 'run', run)
end
return cursor + added

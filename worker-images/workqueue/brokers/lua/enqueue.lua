-- Append one seeding batch, atomically with the seed cursor, so a seeder killed at any point
-- and run again resumes where the last committed batch ended: each task is queued once.
-- ARGV: expected_cursor, fingerprint, total, run ('' for none), one JSON array of payloads
-- (one argument instead of one per task, which the client would encode one by one), and the
-- printf format of an id: a task's id is its 0-based index in the task list.
-- Returns the new cursor, or an error if another seeder moved the cursor or the list differs.
local expected, fingerprint, total, run = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local id_format = ARGV[6]
local cursor = tonumber(redis.call('HGET', state, 'cursor') or '0')
local seen, seen_run = unpack(redis.call('HMGET', state, 'fingerprint', 'run'))
if (seen and seen ~= fingerprint) or (run ~= '' and seen_run and seen_run ~= run) then
  return redis.error_reply('SEEDCONFLICT queue already seeded from a different task list')
end
if cursor ~= expected then
  return redis.error_reply('SEEDCURSOR cursor is ' .. cursor .. ', expected ' .. expected)
end
local payloads = cjson.decode(ARGV[5])
-- Written in slices: Lua's unpack() fails beyond a few thousand values.
local SLICE = 500
for first = 1, #payloads, SLICE do
  local last = math.min(first + SLICE - 1, #payloads)
  local ids, fields = {}, {}
  for i = first, last do
    local id = string.format(id_format, cursor + i - 1)
    ids[#ids + 1] = id
    fields[#fields + 1] = id
    fields[#fields + 1] = payloads[i]
  end
  redis.call('HSET', items, unpack(fields))
  redis.call('RPUSH', pending, unpack(ids))
end
local added = #payloads
redis.call('HSET', state, 'cursor', cursor + added, 'fingerprint', fingerprint, 'total', total)
if run ~= '' then
  redis.call('HSET', state, 'run', run)
end
return cursor + added

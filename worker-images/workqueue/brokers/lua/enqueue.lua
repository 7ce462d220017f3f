-- Append one seeding batch, atomically with the seed cursor, so a seeder killed at any point
-- and run again resumes where the last committed batch ended: each task is queued once.
-- ARGV: expected_cursor, fingerprint, total, then id1, payload1, id2, payload2, ...
-- Returns the new cursor, or an error if another seeder moved the cursor or the list differs.
local expected, fingerprint, total = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local cursor = tonumber(redis.call('HGET', state, 'cursor') or '0')
local seen = redis.call('HGET', state, 'fingerprint')
if seen and seen ~= fingerprint then
  return redis.error_reply('SEEDCONFLICT queue already seeded from a different task list')
end
if cursor ~= expected then
  return redis.error_reply('SEEDCURSOR cursor is ' .. cursor .. ', expected ' .. expected)
end
local ids = {}
for i = 4, #ARGV, 2 do
  redis.call('HSET', items, ARGV[i], ARGV[i + 1])
  ids[#ids + 1] = ARGV[i]
end
if #ids > 0 then
  redis.call('RPUSH', pending, unpack(ids))
end
redis.call('HSET', state, 'cursor', cursor + #ids, 'fingerprint', fingerprint, 'total', total)
return cursor + #ids

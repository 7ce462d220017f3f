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
-- Pushed in slices: Lua's unpack() fails beyond a few thousand values.
local slice, added = {}, 0
for i = 4, #ARGV, 2 do
  redis.call('HSET', items, ARGV[i], ARGV[i + 1])
  slice[#slice + 1] = ARGV[i]
  added = added + 1
  if #slice == 1000 then
    redis.call('RPUSH', pending, unpack(slice))
    slice = {}
  end
end
if #slice > 0 then
  redis.call('RPUSH', pending, unpack(slice))
end
redis.call('HSET', state, 'cursor', cursor + added, 'fingerprint', fingerprint, 'total', total)
return cursor + added

-- Mark items done, each only if `worker` still holds its lease.
-- ARGV: worker, id1, id2, ...   Returns one 1 (done) or 0 (lease lost) per id.
local worker = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if owned_by(id, worker) then
    unlease(id)
    redis.call('HDEL', items, id)
    redis.call('HDEL', attempts, id)
    redis.call('HDEL', errors, id)
    redis.call('SADD', done, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

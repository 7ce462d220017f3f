-- A run of an item failed: retry it (after delay_ms), or dead-letter it after max_attempts runs.
-- ARGV: worker, max_attempts, id, error, delay_ms, record (kept if it is dead-lettered)
-- Returns 'retry', 'dead', or 'lost' (lease not ours).
require_state()
local worker, max_attempts, id, err, delay_ms, rec =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if not owned_by(id, worker) then
  return 'lost'
end
unlease(id)
return retry_or_bury(id, err, max_attempts, delay_ms, rec)

-- A run of an item failed: retry it, or dead-letter it after max_attempts runs.
-- ARGV: worker, max_attempts, id, error   Returns 'retry', 'dead', or 'lost' (lease not ours).
require_state()
local worker, max_attempts, id, err = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if not owned_by(id, worker) then
  return 'lost'
end
unlease(id)
return retry_or_bury(id, err, max_attempts)

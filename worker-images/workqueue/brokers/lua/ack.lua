-- Mark items done, each only if `worker` still holds its lease.
-- ARGV: worker, id1, record1, id2, record2, ...
-- Returns one 1 (done) or 0 (lease lost) per id.
require_state()
return mark_done(ARGV[1], 2)

-- A request that was to spend its install's budget in the script serving it, but ended
-- before (a body refused, for example), spends it here: the same counter.
-- KEYS[1] the reader's budget HASH, KEYS[2] their profile HASH.
-- ARGV[1] install (token hash), ARGV[2] window (ms), ARGV[3] limit.
-- Returns {count, ms left}; {0, 0} for a reader erased or being erased (nothing made).
local state = redis.call('HMGET', KEYS[2], 'events', 'erasing')
if not state[1] or state[2] then return {0, 0} end
local count, left = spend_budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {count, left}

-- A request that was to spend its install's budget in the script serving it, but ended
-- before (a body refused, for example), spends it here: the same counter.
-- KEYS[1] the reader's budget HASH, KEYS[2] their profile HASH, KEYS[3] their installs SET.
-- ARGV[1] install (token hash), ARGV[2] window (ms), ARGV[3] limit, ARGV[4] the token's
-- whole hash when the reader's id was taken from the token unchecked, else ''.
-- Returns {count, ms left}; {0, 0} for a reader erased or being erased (nothing made);
-- {-1, 0} for a token that named its reader unchecked and is not one of their installs,
-- or named a reader who is no more (nothing made: its caller spends another budget).
local state = redis.call('HMGET', KEYS[2], 'events', 'erasing')
if not state[1] or state[2] then
  if ARGV[4] ~= '' then return {-1, 0} end
  return {0, 0}
end
if not installed(KEYS[2], KEYS[3], ARGV[4]) then return {-1, 0} end
local count, left = spend_budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {count, left}

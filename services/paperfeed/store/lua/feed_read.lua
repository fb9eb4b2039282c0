-- A feed request in one call: the install's request budget spent, the reader's event
-- count and their cached feed read (all under the reader's hash tag).
-- KEYS[1] the reader's budget HASH, KEYS[2] profile HASH, KEYS[3] cached feed STRING.
-- ARGV[1] install (token hash), ARGV[2] window (ms), ARGV[3] limit (0: no budget).
-- Returns {count, ms left, event count (false: no such reader), cached feed (false),
-- impressions among the events, changes of the reader's follows (false: none)};
-- past the budget nothing is read. A reader erased, or being erased, spends nothing (no
-- key of theirs is made again).
local counts = redis.call('HMGET', KEYS[2], 'events', 'impressions', 'erasing', 'follows')
local events = counts[1]
if not events or counts[3] then return {0, 0, false, false, false, false} end
local count, left = spend_budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if tonumber(ARGV[3]) > 0 and count > tonumber(ARGV[3]) then
  return {count, left, false, false, false, false}
end
return {count, left, events, redis.call('GET', KEYS[3]), counts[2], counts[4]}

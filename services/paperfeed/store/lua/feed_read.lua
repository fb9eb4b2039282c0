-- A feed request in one call: the install's request budget spent, the reader's event
-- count and their cached feed read (all under the reader's hash tag), and, when that
-- feed cannot be served as it is, what ranking them again reads.
-- KEYS[1] the reader's budget HASH, KEYS[2] profile HASH, KEYS[3] cached feed STRING,
-- KEYS[4] records HASH, KEYS[5] vector STRING, KEYS[6] the feed's candidates STRING,
-- KEYS[7] follows HASH, KEYS[8] installs SET; on one Redis server (not a cluster, where
-- they live in other slots) KEYS[9] the catalog's and KEYS[10] the model's current
-- version STRINGs.
-- ARGV[1] install (token hash), ARGV[2] window (ms), ARGV[3] limit (0: no budget),
-- ARGV[4] the token's whole hash when the reader's id was taken from the token unchecked
-- (``installed``), else ''.
-- Returns {count, ms left, event count (false: no such reader, or not this install's),
-- cached feed (false), impressions among the events, changes of the reader's follows
-- (false: none)}, then the two versions when KEYS[9] and KEYS[10] are given (false:
-- none), and when
-- there is no cached feed or it was ranked after another number of events (the last
-- element of its JSON array, serving.feed.CachedFeed.events: the reader acted since) the
-- reader's records (a flat HGETALL), vector, candidate table and follows (HGETALL) after
-- them: the re-sort or re-rank that follows needs no second round trip. Past the budget
-- nothing is read. A reader erased, or being erased, spends nothing (no key of theirs is
-- made again).
local counts = redis.call('HMGET', KEYS[2], 'events', 'impressions', 'erasing', 'follows')
local events = counts[1]
if not events or counts[3] or not installed(KEYS[2], KEYS[8], ARGV[4]) then
  return {0, 0, false, false, false, false}
end
local count, left = spend_budget(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if tonumber(ARGV[3]) > 0 and count > tonumber(ARGV[3]) then
  return {count, left, false, false, false, false}
end
local feed = redis.call('GET', KEYS[3])
local answer = {count, left, events, feed, counts[2], counts[4]}
if #KEYS >= 10 then
  answer[7] = redis.call('GET', KEYS[9])
  answer[8] = redis.call('GET', KEYS[10])
end
-- (The match starts near the end: from the start, Lua would try every byte of the feed.)
if not feed or string.match(feed, ',(%-?%d+)%]$', math.max(1, #feed - 24)) ~= events then
  local at = #answer
  answer[at + 1] = redis.call('HGETALL', KEYS[4])
  answer[at + 2] = redis.call('GET', KEYS[5])
  answer[at + 3] = redis.call('GET', KEYS[6])
  answer[at + 4] = redis.call('HGETALL', KEYS[7])
end
return answer

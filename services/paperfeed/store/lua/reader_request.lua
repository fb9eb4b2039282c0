-- A reader asks the catalog for a paper: one of their reports a day (the budget the
-- ingest spends on papers met on pages: the profile's reports_day and reports), and the
-- id kept among their requests (erasure takes them out of its requesters).
-- KEYS[1] profile HASH, KEYS[2] the reader's requests ZSET
-- ARGV[1] paper id, ARGV[2] now (unix seconds), ARGV[3] reports a day,
-- ARGV[4] how long a request is kept (s)
-- Returns {1, reports left today} when spent, {0, 0} past the budget (nothing written),
-- {-1, 0} for a reader erased (or being erased, or absorbed into another).
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return {-1, 0}
end
local now, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local day = math.floor(now / 86400)
local counted = redis.call('HMGET', KEYS[1], 'reports_day', 'reports')
local used = 0
if tonumber(counted[1]) == day then used = tonumber(counted[2] or 0) end
if used >= cap then
  return {0, 0}
end
redis.call('HSET', KEYS[1], 'reports_day', day, 'reports', used + 1)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[4]) * 1000))
return {1, cap - used - 1}

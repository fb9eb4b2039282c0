-- A reader reported an arXiv id that is not in the catalog. Only that it was reported is
-- kept (never text from the client): the worker looks the id up at the sources.
-- KEYS[1] lookup state HASH, KEYS[2] reporter-count ZSET, KEYS[3] first-seen ZSET,
-- KEYS[4] reporters SET of this paper
-- ARGV[1] paper id, ARGV[2] user id, ARGV[3] now, ARGV[4] cap, ARGV[5] reporters TTL (s),
-- ARGV[6] reporters key prefix (for evicted candidates)
-- Returns the distinct reporters of the paper.
local paper = ARGV[1]
if redis.call('SADD', KEYS[4], ARGV[2]) == 1 then
  redis.call('ZINCRBY', KEYS[2], 1, paper)
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]))
redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[3]), paper)
local size = redis.call('ZCARD', KEYS[3])
if size > tonumber(ARGV[4]) then
  local evicted = redis.call('ZRANGE', KEYS[3], 0, size - tonumber(ARGV[4]) - 1)
  for _, old in ipairs(evicted) do
    if old ~= paper then
      redis.call('HDEL', KEYS[1], old)
      redis.call('ZREM', KEYS[2], old)
      redis.call('ZREM', KEYS[3], old)
      redis.call('DEL', ARGV[6] .. old)
    end
  end
end
return redis.call('ZSCORE', KEYS[2], paper)

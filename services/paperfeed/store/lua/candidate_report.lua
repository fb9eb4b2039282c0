-- A reader reported an arXiv id that is not in the catalog, or asked for it (POST
-- /v1/catalog/requests: their choice to make the id public, so it is looked up without
-- waiting for a second reporter). Only the id is kept (never text from the client): the
-- worker looks it up at the sources. A reader who asks counts among its reporters and
-- its requesters.
-- KEYS[1] lookup state HASH, KEYS[2] reporter-count ZSET, KEYS[3] first-seen ZSET,
-- KEYS[4] reporters SET of this paper, KEYS[5] requester-count ZSET,
-- KEYS[6] requesters SET of this paper
-- ARGV[1] paper id, ARGV[2] user id, ARGV[3] now, ARGV[4] cap, ARGV[5] TTL (s) of the sets,
-- ARGV[6] reporters key prefix, ARGV[7] requesters key prefix (for evicted candidates),
-- ARGV[8] '1' when the reader asks for it
-- Returns the distinct reporters of the paper, or its requesters when asked for.
local paper, user, ttl = ARGV[1], ARGV[2], tonumber(ARGV[5])
local asked = ARGV[8] == '1'
if redis.call('SADD', KEYS[4], user) == 1 then
  redis.call('ZINCRBY', KEYS[2], 1, paper)
end
redis.call('EXPIRE', KEYS[4], ttl)
if asked then
  if redis.call('SADD', KEYS[6], user) == 1 then
    redis.call('ZINCRBY', KEYS[5], 1, paper)
  end
  redis.call('EXPIRE', KEYS[6], ttl)
end
redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[3]), paper)
local size = redis.call('ZCARD', KEYS[3])
if size > tonumber(ARGV[4]) then
  local evicted = redis.call('ZRANGE', KEYS[3], 0, size - tonumber(ARGV[4]) - 1)
  for _, old in ipairs(evicted) do
    if old ~= paper then
      redis.call('HDEL', KEYS[1], old)
      redis.call('ZREM', KEYS[2], old)
      redis.call('ZREM', KEYS[3], old)
      redis.call('ZREM', KEYS[5], old)
      redis.call('DEL', ARGV[6] .. old, ARGV[7] .. old)
    end
  end
end
return redis.call('ZSCORE', asked and KEYS[5] or KEYS[2], paper)

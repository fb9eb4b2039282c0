-- A reader reported a paper that is not in the catalog.
-- KEYS[1] candidate papers HASH, KEYS[2] reporter-count ZSET, KEYS[3] first-seen ZSET,
-- KEYS[4] reporters SET of this paper
-- ARGV[1] paper id, ARGV[2] user id, ARGV[3] paper JSON or "", ARGV[4] now, ARGV[5] cap,
-- ARGV[6] reporters TTL (s), ARGV[7] reporters key prefix (for evicted candidates)
-- Returns {distinct reporters, stored paper JSON or false}.
local paper = ARGV[1]
if redis.call('SADD', KEYS[4], ARGV[2]) == 1 then
  redis.call('ZINCRBY', KEYS[2], 1, paper)
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[1], paper) == 0 then
  redis.call('HSET', KEYS[1], paper, ARGV[3])
end
redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[4]), paper)
local size = redis.call('ZCARD', KEYS[3])
if size > tonumber(ARGV[5]) then
  local evicted = redis.call('ZRANGE', KEYS[3], 0, size - tonumber(ARGV[5]) - 1)
  for _, old in ipairs(evicted) do
    if old ~= paper then
      redis.call('HDEL', KEYS[1], old)
      redis.call('ZREM', KEYS[2], old)
      redis.call('ZREM', KEYS[3], old)
      redis.call('DEL', ARGV[7] .. old)
    end
  end
end
return {redis.call('ZSCORE', KEYS[2], paper), redis.call('HGET', KEYS[1], paper)}

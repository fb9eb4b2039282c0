-- Follow an author or a topic: one field of the reader's follows hash, within the cap,
-- counted in the profile (the cached feed's stamp carries the count: the next feed is
-- ranked with the follow). Only while the reader exists and is not being erased.
-- KEYS[1] the reader's profile HASH, KEYS[2] their follows HASH.
-- ARGV[1] the field, ARGV[2] its value, ARGV[3] the cap.
-- Returns 1 followed, 0 already so, -1 no such reader, -2 the cap reached.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return -1
end
local kept = redis.call('HGET', KEYS[2], ARGV[1])
if kept == ARGV[2] then return 0 end
if not kept and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then return -2 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'follows', 1)
return 1

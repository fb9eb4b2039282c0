-- Unfollow: the field out of the reader's follows hash, counted in the profile when it
-- was there (the next feed is ranked without it).
-- KEYS[1] the reader's profile HASH, KEYS[2] their follows HASH. ARGV[1] the field.
-- Returns 1 unfollowed, 0 not followed, -1 no such reader.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return -1
end
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'follows', 1)
return 1

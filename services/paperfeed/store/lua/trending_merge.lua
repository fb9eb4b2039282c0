-- Move a paper's trending score to the paper it was merged into (one window).
-- KEYS[1] scores ZSET; ARGV[1] old id, ARGV[2] new id. Scores of one window share its
-- epoch, so they add as they are. Running it again moves nothing.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZINCRBY', KEYS[1], score, ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1

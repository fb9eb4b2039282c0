-- Keep what a feed computed for a reader, only while the reader exists: an erasure that
-- happened while the feed was computed must not be undone.
-- KEYS: the reader's profile, their cached feed, their vector, their feed's candidates.
-- ARGV: the feed JSON, its time to live (ms), the vector JSON ('' to leave it), the
-- candidates (binary, kept as long as the feed; '' to leave them, '-' to delete them).
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[3])
end
if ARGV[4] == '-' then
  redis.call('DEL', KEYS[4])
elseif ARGV[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[2])
end
return 1

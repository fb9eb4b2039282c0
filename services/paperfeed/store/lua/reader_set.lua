-- Write one of a reader's keys only while the reader exists: a write prepared before an
-- erasure (a digest run waiting on SMTP, a confirmation) must not recreate their data.
-- KEYS[1] the reader's profile, KEYS[2] the key to set. ARGV[1] the value.
-- Returns 1 when written, 0 when the reader is gone.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1])
return 1

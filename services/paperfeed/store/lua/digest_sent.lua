-- A digest SMTP accepted, recorded only while the reader exists (an erasure during the
-- send must not leave their address behind).
-- KEYS[1] profile, KEYS[2] subscription, KEYS[3] sent papers ZSET, KEYS[4] outbox.
-- ARGV[1] the subscription JSON (period done), ARGV[2] now, ARGV[3] papers kept,
-- ARGV[4..] the papers sent. Returns 1 when recorded, 0 when the reader is gone.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return 0
end
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[i])
end
if #ARGV >= 4 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[3]) - 1)
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4])
return 1

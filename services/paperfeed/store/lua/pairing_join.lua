-- An install joins a reader. KEYS[1] the reader's profile, KEYS[2] their linked installs
-- SET. ARGV[1] the install's token hash, ARGV[2] now, ARGV[3] how long a reader's
-- "leaving" holds (s): a link that died before it was recorded leaves it behind.
-- Returns 1 when joined (again: idempotent), 0 when the reader is gone, being erased,
-- or leaving for another reader themselves.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return 0
end
local leaving = tonumber(redis.call('HGET', KEYS[1], 'leaving'))
if leaving and tonumber(ARGV[2]) - leaving < tonumber(ARGV[3]) then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1

-- Add time-decayed weights to one trending window, in log space.
-- KEYS[1] scores ZSET, KEYS[2] epoch STRING, KEYS[3] (optional) the marker of a
-- once-only addition: when it exists, the addition was made before and nothing happens.
-- ARGV[1] now, ARGV[2] half-life (s), ARGV[3] cap, then triples: paper, weight, at
-- A weight w at time t is stored as w * 2^((t - epoch) / half_life); when the exponent
-- of "now" grows past 64 every score is rescaled to a new epoch (= now).
if KEYS[3] and redis.call('SET', KEYS[3], '1', 'NX', 'EX', 30 * 86400) == false then
  return redis.call('GET', KEYS[2])
end
local now = tonumber(ARGV[1])
local half_life = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local epoch = tonumber(redis.call('GET', KEYS[2]))
if not epoch then
  epoch = now
  redis.call('SET', KEYS[2], string.format('%.6f', now))
end
if (now - epoch) / half_life > 64 then
  local factor = 2 ^ (-(now - epoch) / half_life)
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    redis.call('ZADD', KEYS[1], tonumber(all[i + 1]) * factor, all[i])
  end
  epoch = now
  redis.call('SET', KEYS[2], string.format('%.6f', now))
end
-- Scores that an undo brought back to (about) zero leave the window.
local floor = 1e-9 * 2 ^ ((now - epoch) / half_life)
for i = 4, #ARGV, 3 do
  local weight = tonumber(ARGV[i + 1]) * 2 ^ ((tonumber(ARGV[i + 2]) - epoch) / half_life)
  local score = tonumber(redis.call('ZINCRBY', KEYS[1], weight, ARGV[i]))
  if score <= floor then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
local size = redis.call('ZCARD', KEYS[1])
if size > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - cap - 1)
end
return tostring(epoch)

-- One request against a fixed-window budget, atomically.
-- KEYS[1] the counter; ARGV[1] the window (ms). Returns {count in this window, ms left}.
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}

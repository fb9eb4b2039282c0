-- Redeem a pairing code once. KEYS[1] pf:pair:<code hash>; ARGV[1] the redeeming reader.
-- Returns the code's reader (the code is gone), "=" when it is the redeemer's own code
-- (the code stays: it is meant for another browser), or nil for no such code.
local owner = redis.call('GET', KEYS[1])
if not owner then
  return nil
end
if owner == ARGV[1] then
  return '='
end
redis.call('DEL', KEYS[1])
return owner

-- An install starts moving to another reader. KEYS[1] its reader's profile, KEYS[2] the
-- reader's linked installs SET. ARGV[1] the install's token hash, ARGV[2] now.
-- Returns 'gone' (the reader is erased or being erased), 'conflict' (the reader's first
-- install, with other installs linked to it: they would be left behind), 'moving' (a
-- linked install: it moves alone) or 'leaving' (the reader's only install: the reader
-- is marked as leaving, so no install can link to them meanwhile, and joins the other).
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return 'gone'
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 'moving'
end
if redis.call('SCARD', KEYS[2]) > 0 then
  return 'conflict'
end
redis.call('HSET', KEYS[1], 'leaving', ARGV[2])
return 'leaving'

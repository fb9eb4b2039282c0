-- An install's request budget kept under its reader's hash tag, so that the script
-- serving the request spends it in the same call (no round trip of its own). One hash a
-- reader: field 'w' the current window (windows are on Redis's clock, the one clock
-- every api process shares), a field per install (its token hash) counting its requests
-- in it; the hash expires at the end of its window.
-- Returns (count in this window, ms left of it); (0, 0) when limit is 0 (no budget).
local function spend_budget(key, install, window_ms, limit)
  if limit <= 0 then return 0, 0 end
  local clock = redis.call('TIME')
  local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local window = math.floor(now_ms / window_ms)
  local left = (window + 1) * window_ms - now_ms
  if tonumber(redis.call('HGET', key, 'w') or '-1') ~= window then
    redis.call('DEL', key)
    redis.call('HSET', key, 'w', string.format('%d', window))
  end
  local count = redis.call('HINCRBY', key, install, 1)
  redis.call('PEXPIRE', key, left)
  return count, left
end
-- The request's install is one of the reader's, when the api took the reader's id from
-- the token itself (``users.claimed_reader``) and left the check to the script: the
-- token's hash is their first install's (the profile's token_hash) or a linked one's
-- (their installs SET). '' for a token the api looked up itself: nothing to check.
local function installed(profile, installs, token_hash)
  if token_hash == '' then return true end
  if redis.call('HGET', profile, 'token_hash') == token_hash then return true end
  return redis.call('SISMEMBER', installs, token_hash) == 1
end

-- An install's request budget kept under its reader's hash tag, so that the script
-- serving the request spends it in the same call (no round trip of its own). One hash a
-- reader: field 'w' the current window (windows are on the clock), a field per install
-- (its token hash) counting its requests in it; the hash expires with its window.
-- Returns (count in this window, ms left of it); (0, 0) when limit is 0 (no budget).
local function spend_budget(key, install, window_ms, limit, now_ms)
  if limit <= 0 then return 0, 0 end
  local window = math.floor(now_ms / window_ms)
  local ends = (window + 1) * window_ms
  if redis.call('HGET', key, 'w') ~= tostring(window) then
    redis.call('DEL', key)
    redis.call('HSET', key, 'w', tostring(window))
    redis.call('PEXPIREAT', key, ends)
  end
  return redis.call('HINCRBY', key, install, 1), ends - now_ms
end

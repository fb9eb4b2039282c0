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

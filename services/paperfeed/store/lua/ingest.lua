-- Atomic, idempotent ingest of one user's events (all keys share the user's hash tag).
-- KEYS[1] dedupe ZSET, KEYS[2] papers HASH, KEYS[3] touched ZSET, KEYS[4] log LIST,
-- KEYS[5] profile HASH
-- ARGV[1] now, ARGV[2] dedupe cutoff (unix s), ARGV[3] dedupe cap, ARGV[4] log cap,
-- ARGV[5] papers cap, then 6 values an event: event id, paper id, type, at, dwell ms,
-- raw JSON for the log.
-- Returns {accepted, duplicates, {paper, trending weight, at, ...}, {accepted paper ids}}.
-- The weight tables below are generated from paperfeed.events (one source of truth).
local CONFIDENCE = __CONFIDENCE__
local TRENDING = __TRENDING__
local REPEAT_CAP = __REPEAT_CAP__
local DWELL_PER_POINT_MS = __DWELL_PER_POINT_MS__
local DWELL_CAP = __DWELL_CAP__
local UPVOTED, SAVED, DISMISSED, SHARED = 1, 2, 4, 8

-- A reader erased since their token was checked: nothing of theirs is written again.
if redis.call('EXISTS', KEYS[5]) == 0 then
  return {-1, 0, {}, {}}
end

local now = tonumber(ARGV[1])
local accepted, duplicates = 0, 0
local trend, papers = {}, {}

local function credit(paper, weight, at)
  trend[#trend + 1] = paper
  trend[#trend + 1] = tostring(weight)
  trend[#trend + 1] = tostring(at)
end

local function has(r, flag) return math.floor(r.f / flag) % 2 == 1 end
local function set(r, flag) if not has(r, flag) then r.f = r.f + flag end end
local function clear(r, flag) if has(r, flag) then r.f = r.f - flag end end

local function confidence(r)
  local w = math.min(r.v, REPEAT_CAP) * CONFIDENCE.view + math.min(r.c, REPEAT_CAP) * CONFIDENCE.click
  if has(r, UPVOTED) then w = w + CONFIDENCE.upvote end
  if has(r, SAVED) then w = w + CONFIDENCE.save end
  if has(r, SHARED) then w = w + CONFIDENCE.share end
  return w + math.min(r.dw / DWELL_PER_POINT_MS, DWELL_CAP)
end

for i = 6, #ARGV, 6 do
  local event_id, paper, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local at, dwell, raw = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), ARGV[i + 5]
  if redis.call('ZADD', KEYS[1], 'NX', now, event_id) == 0 then
    duplicates = duplicates + 1
  else
    accepted = accepted + 1
    papers[#papers + 1] = paper
    local stored = redis.call('HGET', KEYS[2], paper)
    local r = stored and cjson.decode(stored) or {}
    r.f = r.f or 0; r.v = r.v or 0; r.c = r.c or 0; r.i = r.i or 0; r.dw = r.dw or 0
    if kind == 'impression' then
      r.i = r.i + 1
    elseif kind == 'view' then
      r.v = r.v + 1
      r.dw = r.dw + dwell
      if r.v == 1 then r.vt = at; credit(paper, TRENDING.view, at) end
    elseif kind == 'read' then
      r.dw = r.dw + dwell
    elseif kind == 'click' then
      r.c = r.c + 1
      if r.c == 1 then r.ct = at; credit(paper, TRENDING.click, at) end
    elseif kind == 'upvote' then
      if not has(r, UPVOTED) then set(r, UPVOTED); r.ut = at; credit(paper, TRENDING.upvote, at) end
    elseif kind == 'unvote' then
      if has(r, UPVOTED) then clear(r, UPVOTED); credit(paper, -TRENDING.upvote, r.ut); r.ut = nil end
    elseif kind == 'save' then
      if not has(r, SAVED) then set(r, SAVED); r.st = at; credit(paper, TRENDING.save, at) end
    elseif kind == 'unsave' then
      if has(r, SAVED) then clear(r, SAVED); credit(paper, -TRENDING.save, r.st); r.st = nil end
    elseif kind == 'share' then
      if not has(r, SHARED) then set(r, SHARED); r.sh = at; credit(paper, TRENDING.share, at) end
    elseif kind == 'dismiss' then
      set(r, DISMISSED)
    elseif kind == 'undismiss' then
      clear(r, DISMISSED)
    end
    r.w = confidence(r)
    r.t = math.max(r.t or 0, at)
    redis.call('HSET', KEYS[2], paper, cjson.encode(r))
    redis.call('ZADD', KEYS[3], now, paper)
    redis.call('LPUSH', KEYS[4], raw)
  end
end

-- Bounds: dedupe ids by age and count, the log by length, papers by recency.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]))
local size = redis.call('ZCARD', KEYS[1])
if size > tonumber(ARGV[3]) then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - tonumber(ARGV[3]) - 1)
end
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
size = redis.call('ZCARD', KEYS[3])
if size > tonumber(ARGV[5]) then
  local old = redis.call('ZRANGE', KEYS[3], 0, size - tonumber(ARGV[5]) - 1)
  for _, paper in ipairs(old) do
    redis.call('HDEL', KEYS[2], paper)
    redis.call('ZREM', KEYS[3], paper)
  end
end
if accepted > 0 then
  redis.call('HINCRBY', KEYS[5], 'events', accepted)
  redis.call('HSET', KEYS[5], 'last_event_at', string.format('%.3f', now))
end
return {accepted, duplicates, trend, papers}

-- Atomic, idempotent ingest of one reader's events (all keys share the reader's hash tag).
-- KEYS[1] seen STRING (event id hashes), KEYS[2] papers HASH, KEYS[3] events STRING (the
-- compact log), KEYS[4] profile HASH, KEYS[5] titles HASH (page titles of papers the
-- catalog lacks), KEYS[6..8] the layout before compact records (dedupe ZSET, touched
-- ZSET, log LIST): converted once, then deleted.
-- KEYS[9] the reader's request budget (reader_budget.lua, prepended to this script),
-- KEYS[10] their installs SET.
-- ARGV[1] now, ARGV[2] seen cap (ids), ARGV[3] log cap (bytes), ARGV[4] papers cap,
-- ARGV[5] titles cap, ARGV[6] reports a day, ARGV[7] the install (token hash) whose
-- budget this request spends, ARGV[8] the budget's window (ms), ARGV[9] its limit (0:
-- none), ARGV[10] the token's whole hash when the reader's id was taken from the token
-- unchecked (reader_budget.lua's ``installed``), else '', then 9 values an event: event
-- id, paper id, type, at (unix milliseconds), dwell ms, catalogued (1/0), page title (""
-- for none), log line, the ids merged into this paper (space-separated: a record kept under one of
-- them joins this paper's).
-- Returns {accepted, duplicates, {paper, trending weight, at, ...}, {accepted paper ids},
-- {papers the catalog lacks, met for the first time, within the reader's reports a day}};
-- past the budget {-2, count, ms left of the window, {}, {}} and nothing is written.
-- The tables below are generated from paperfeed.events (one source of truth).
local CONFIDENCE = __CONFIDENCE__
local TRENDING = __TRENDING__
local REPEAT_CAP = __REPEAT_CAP__
local DWELL_PER_POINT_MS = __DWELL_PER_POINT_MS__
local DWELL_CAP = __DWELL_CAP__
local TYPE_CODES = __TYPE_CODES__
local SOURCE_CODES = __SOURCE_CODES__
local UPVOTED, SAVED, DISMISSED, SHARED, UNCREDITED = 1, 2, 4, 8, 16
local ID_BYTES = 8
local EPOCH = __RECORD_EPOCH__
local EPOCH_MS = EPOCH * 1000
local PER_EVENT = 9
local FIRST_EVENT = 11

-- A reader erased (or being erased) since their token was checked: nothing of theirs is
-- written again; nor by a token that is not one of their installs'.
if redis.call('EXISTS', KEYS[4]) == 0 or redis.call('HEXISTS', KEYS[4], 'erasing') == 1
    or not installed(KEYS[4], KEYS[10], ARGV[10]) then
  return {-1, 0, {}, {}, {}}
end

local now = tonumber(ARGV[1])
local budget_limit = tonumber(ARGV[9])
local spent, window_left = spend_budget(KEYS[9], ARGV[7], tonumber(ARGV[8]), budget_limit)
if budget_limit > 0 and spent > budget_limit then
  return {-2, spent, window_left, {}, {}}
end
local seen_cap, log_cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local papers_cap, titles_cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local reports_cap = tonumber(ARGV[6])

local now_ms = math.floor(now * 1000)

local function has(f, flag) return math.floor(f / flag) % 2 == 1 end

-- The reader likes the paper: the recommender counts it (paperfeed.events.confidence
-- above 0, not dismissed).
local function liked(r)
  if has(r.f, DISMISSED) then return false end
  return r.v > 0 or r.c > 0 or r.dw > 0 or has(r.f, UPVOTED) or has(r.f, SAVED) or has(r.f, SHARED)
end

-- The first interest's time as the client gave it: the earliest action, else t.
local function first_at(r)
  local x = nil
  for _, k in ipairs({'vt', 'ct', 'ut', 'st', 'sh'}) do
    if r[k] and (x == nil or r[k] < x) then x = r[k] end
  end
  return x or r.t
end

-- A record is a JSON array [t, f, v, c, i, dw, vt, ct, ut, st, sh, rl]: t the last event
-- (milliseconds since EPOCH), then flags, views, clicks, impressions, dwell ms, the
-- times of the first view, first click, upvote, save and share as milliseconds before t
-- (-1: none), and rl, whole seconds from the first interest's time to when this service
-- received the event that made the reader like the paper (r.rt; 0: within a second, or
-- a record kept before rl existed). Inside this script every time is in unix
-- milliseconds. Trailing default values are left out.
local function decode(stored)
  if not stored then return {t = 0, f = 0, v = 0, c = 0, i = 0, dw = 0} end
  if string.sub(stored, 1, 1) == '{' then  -- a record of the JSON-object layout
    local r = cjson.decode(stored)
    r.w = nil
    r.f = r.f or 0; r.v = r.v or 0; r.c = r.c or 0
    r.i = r.i or 0; r.dw = math.floor(r.dw or 0)
    for _, k in ipairs({'t', 'vt', 'ct', 'ut', 'st', 'sh'}) do
      if type(r[k]) == 'number' then r[k] = math.floor(r[k] * 1000) else r[k] = nil end
    end
    r.t = r.t or 0
    r.rt = first_at(r)
    return r
  end
  local a = cjson.decode(stored)
  local t = a[1] + EPOCH_MS
  local function at(k) local d = a[k]; if d == nil or d < 0 then return nil end; return t - d end
  local r = {
    t = t, f = a[2] or 0, v = a[3] or 0, c = a[4] or 0, i = a[5] or 0, dw = a[6] or 0,
    vt = at(7), ct = at(8), ut = at(9), st = at(10), sh = at(11),
  }
  r.rt = first_at(r) + (a[12] or 0) * 1000
  return r
end

local function encode(r)
  local t = r.t
  local function before(x) if x == nil then return -1 end; return t - math.floor(x) end
  local late = 0
  if r.rt and liked(r) then late = math.floor((r.rt - first_at(r)) / 1000) end
  local a = {t - EPOCH_MS, r.f, r.v, r.c, r.i, r.dw, before(r.vt), before(r.ct), before(r.ut),
    before(r.st), before(r.sh), late}
  local n = #a
  while n > 1 and a[n] == ((n > 6 and n < 12) and -1 or 0) do a[n] = nil; n = n - 1 end
  for k = 1, n do a[k] = string.format('%d', a[k]) end
  return '[' .. table.concat(a, ',') .. ']'
end

-- An event id as the first ID_BYTES bytes of its SHA-1.
local function id_hash(event_id)
  local hex, out = redis.sha1hex(event_id), {}
  for k = 1, 2 * ID_BYTES, 2 do out[#out + 1] = string.char(tonumber(string.sub(hex, k, k + 1), 16)) end
  return table.concat(out)
end

local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'
local function b36(n)
  n = math.floor(n)
  local sign, out = '', ''
  if n < 0 then sign = '-'; n = -n end
  repeat
    local d = n % 36
    out = string.sub(DIGITS, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  return sign .. out
end

-- The event ids seen: a string of fixed-width hashes, oldest first. Looked up by a plain
-- search for a small batch, through a table for a large one.
local seen = redis.call('GET', KEYS[1]) or ''
local fresh = {}
local migrated = false

-- The layout before compact records, converted once.
if redis.call('EXISTS', KEYS[6]) == 1 then
  local old = redis.call('ZRANGE', KEYS[6], -seen_cap, -1)
  local parts = {}
  for _, event_id in ipairs(old) do parts[#parts + 1] = id_hash(event_id) end
  seen = table.concat(parts) .. seen
  redis.call('DEL', KEYS[6])
  migrated = true
end
local log = redis.call('GET', KEYS[3]) or ''
if redis.call('EXISTS', KEYS[8]) == 1 then
  local old = redis.call('LRANGE', KEYS[8], 0, -1)  -- newest first
  local parts = {}
  for k = #old, 1, -1 do
    local ok, e = pcall(cjson.decode, old[k])
    if ok and type(e) == 'table' and TYPE_CODES[e.type] then
      parts[#parts + 1] = TYPE_CODES[e.type] .. b36(math.floor(e.ts or 0) - EPOCH)
        .. ',' .. ((e.dwell_ms or 0) > 0 and b36(e.dwell_ms) or '')
        .. ',' .. (SOURCE_CODES[e.source or ''] or (e.source and 'o' or '')) .. ','
        .. tostring(e.paper_id) .. '\n'
    end
  end
  log = table.concat(parts) .. log
  redis.call('DEL', KEYS[8])
  migrated = true
end
redis.call('DEL', KEYS[7])

local lookup = nil
if (#ARGV - FIRST_EVENT + 1) / PER_EVENT > 16 then
  lookup = {}
  for k = 1, #seen, ID_BYTES do lookup[string.sub(seen, k, k + ID_BYTES - 1)] = true end
end
local function was_seen(h)
  if lookup then return lookup[h] == true end
  local from = 1
  while true do
    local pos = string.find(seen, h, from, true)
    if not pos then return false end
    if (pos - 1) % ID_BYTES == 0 then return true end
    from = pos + 1
  end
end

local accepted, duplicates = 0, 0
local trend, papers, lines = {}, {}, {}
local records = {}

local function credit(r, paper, weight, at)
  if has(r.f, UNCREDITED) then return end
  trend[#trend + 1] = paper
  trend[#trend + 1] = tostring(weight)
  trend[#trend + 1] = tostring(at / 1000)
end

local function set(r, flag) if not has(r.f, flag) then r.f = r.f + flag end end
local function clear(r, flag) if has(r.f, flag) then r.f = r.f - flag end end

-- One paper's two records (one under an id since merged into it): flags and counts add
-- up, each action keeps its first time, and the trending weight of an action both hold
-- (both credited, the merge moved the old id's weight to this paper) is taken back once.
local ACTIONS = {
  {'vt', TRENDING.view}, {'ct', TRENDING.click}, {'ut', TRENDING.upvote},
  {'st', TRENDING.save}, {'sh', TRENDING.share},
}
local function join(r, o, paper)
  -- Liked since the first of the two was.
  if liked(o) and (not liked(r) or not r.rt or o.rt < r.rt) then r.rt = o.rt end
  for _, action in ipairs(ACTIONS) do
    local k, weight = action[1], action[2]
    if r[k] and o[k] then
      if not has(o.f, UNCREDITED) then credit(r, paper, -weight, math.max(r[k], o[k])) end
      r[k] = math.min(r[k], o[k])
    elseif o[k] then
      r[k] = o[k]
    end
  end
  for _, flag in ipairs({UPVOTED, SAVED, DISMISSED, SHARED}) do
    if has(o.f, flag) then set(r, flag) end
  end
  r.v = r.v + o.v; r.c = r.c + o.c; r.i = r.i + o.i; r.dw = r.dw + o.dw
  r.t = math.max(r.t, o.t)
  return r
end

local titles_left = nil
-- Papers the catalog lacks are reported for a source to confirm, a bounded number a day.
local reports = {}
local impressions, ranking_changed = 0, false
local day = math.floor(now / 86400)
local reports_left = nil

for i = FIRST_EVENT, #ARGV, PER_EVENT do
  local event_id, paper, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local at, dwell, known = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), ARGV[i + 5] == '1'
  local title, line, merged = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local h = id_hash(event_id)
  if was_seen(h) or fresh[h] then
    duplicates = duplicates + 1
  else
    fresh[h] = true
    fresh[#fresh + 1] = h
    accepted = accepted + 1
    if kind == 'impression' then impressions = impressions + 1 end
    papers[#papers + 1] = paper
    local r = records[paper]
    if not r then
      local stored = redis.call('HGET', KEYS[2], paper)
      r = decode(stored)
      -- Records kept under an id since merged into this paper join its record.
      for old in string.gmatch(merged, '%S+') do
        local kept = redis.call('HGET', KEYS[2], old)
        if kept then
          ranking_changed = true
          r = stored and join(r, decode(kept), paper) or decode(kept)
          stored = stored or kept
          redis.call('HDEL', KEYS[2], old)
          redis.call('HDEL', KEYS[5], old)
        end
      end
      -- A paper the catalog did not have when the reader met it earns no trending
      -- weight from this reader, ever (so nothing is taken back that was never given).
      if not stored and not known then
        r.f = UNCREDITED
        if reports_left == nil then
          local counted = redis.call('HMGET', KEYS[4], 'reports_day', 'reports')
          reports_left = reports_cap
          if tonumber(counted[1]) == day then reports_left = reports_cap - tonumber(counted[2] or 0) end
        end
        if reports_left > 0 then
          reports[#reports + 1] = paper
          reports_left = reports_left - 1
        end
      end
      records[paper] = r
    end
    local was_liked = liked(r)
    if kind == 'impression' then
      r.i = r.i + 1
    elseif kind == 'view' then
      r.v = r.v + 1
      r.dw = r.dw + dwell
      if r.v == 1 then r.vt = at; credit(r, paper, TRENDING.view, at) end
    elseif kind == 'read' then
      r.dw = r.dw + dwell
    elseif kind == 'click' then
      r.c = r.c + 1
      if r.c == 1 then r.ct = at; credit(r, paper, TRENDING.click, at) end
    elseif kind == 'upvote' then
      if not has(r.f, UPVOTED) then set(r, UPVOTED); r.ut = at; credit(r, paper, TRENDING.upvote, at) end
    elseif kind == 'unvote' then
      if has(r.f, UPVOTED) then clear(r, UPVOTED); credit(r, paper, -TRENDING.upvote, r.ut); r.ut = nil end
    elseif kind == 'save' then
      if not has(r.f, SAVED) then set(r, SAVED); r.st = at; credit(r, paper, TRENDING.save, at) end
    elseif kind == 'unsave' then
      if has(r.f, SAVED) then clear(r, SAVED); credit(r, paper, -TRENDING.save, r.st); r.st = nil end
    elseif kind == 'share' then
      if not has(r.f, SHARED) then set(r, SHARED); r.sh = at; credit(r, paper, TRENDING.share, at) end
    elseif kind == 'dismiss' then
      set(r, DISMISSED)
    elseif kind == 'undismiss' then
      clear(r, DISMISSED)
    end
    r.v = math.min(r.v, 65535); r.c = math.min(r.c, 65535); r.i = math.min(r.i, 65535)
    r.dw = math.min(r.dw, 4294967295)
    r.t = math.max(r.t, at)
    -- Liked from now on: received now, whatever time the client gave the event.
    if not was_liked and liked(r) then r.rt = now_ms end
    lines[#lines + 1] = line
    if title ~= '' and not known then
      if titles_left == nil then titles_left = titles_cap - redis.call('HLEN', KEYS[5]) end
      if titles_left > 0 and redis.call('HSETNX', KEYS[5], paper, title) == 1 then
        titles_left = titles_left - 1
      end
    end
  end
end

for paper, r in pairs(records) do
  redis.call('HSET', KEYS[2], paper, encode(r))
end

-- Bounds. Event ids: the newest seen_cap. The log: the newest lines within log_cap bytes.
if accepted > 0 or migrated then
  seen = seen .. table.concat(fresh)
  if #seen > seen_cap * ID_BYTES then seen = string.sub(seen, -seen_cap * ID_BYTES) end
  redis.call('SET', KEYS[1], seen)
end
if accepted > 0 or migrated then
  log = log .. table.concat(lines)
  if #log > log_cap then
    local cut = string.find(log, '\n', #log - log_cap, true)
    log = cut and string.sub(log, cut + 1) or ''
  end
  if log == '' then redis.call('DEL', KEYS[3]) else redis.call('SET', KEYS[3], log) end
end

-- Papers: past the cap, the records that matter least go first (those with no upvote,
-- save, dismissal or share, then the rest), oldest first, down to 95% of the cap so
-- that this scan runs once per many new papers.
local size = redis.call('HLEN', KEYS[2])
if size > papers_cap then
  local all = redis.call('HGETALL', KEYS[2])
  local ranked = {}
  for k = 1, #all, 2 do
    local r = decode(all[k + 1])
    ranked[#ranked + 1] = {all[k], (r.f % 16 > 0) and 1 or 0, r.t}
  end
  table.sort(ranked, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    if a[3] ~= b[3] then return a[3] < b[3] end
    return a[1] < b[1]
  end)
  local keep = math.floor(papers_cap * 0.95)
  ranking_changed = true
  for k = 1, size - keep do
    redis.call('HDEL', KEYS[2], ranked[k][1])
    redis.call('HDEL', KEYS[5], ranked[k][1])
  end
end
if accepted > 0 then
  redis.call('HINCRBY', KEYS[4], 'events', accepted)
  -- Impressions change a feed's ranking only by their penalty: counted apart, so that
  -- the feed re-sorts its cached candidates instead of ranking anew (serving.feed). A
  -- batch that joined or evicted records changed more: its impressions count as events.
  if impressions > 0 and not ranking_changed then
    redis.call('HINCRBY', KEYS[4], 'impressions', impressions)
  end
  redis.call('HSET', KEYS[4], 'last_event_at', string.format('%.3f', now))
end
if reports_left ~= nil then
  redis.call('HSET', KEYS[4], 'reports_day', day, 'reports', reports_cap - reports_left)
end
return {accepted, duplicates, trend, papers, reports}

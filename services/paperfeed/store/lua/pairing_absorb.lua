-- What a leaving reader did joins the reader they linked to, once, and only while that
-- reader exists (an erasure meanwhile must not be undone).
-- KEYS[1] profile, KEYS[2] papers HASH, KEYS[3] titles HASH, KEYS[4] cached feed,
-- KEYS[5] cached vector (all the joined reader's).
-- ARGV[1] the leaving reader's id, ARGV[2] their event count, ARGV[3] how many records
-- follow, then paper/record pairs, then paper/title pairs.
-- Returns {-1} when the reader is gone, else {papers joined, papers both had...}; a
-- second run (a retry, the worker) changes nothing and returns what the first did.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'erasing') == 1 then
  return {-1}
end
local marker = 'absorbed:' .. ARGV[1]
local done = redis.call('HGET', KEYS[1], marker)
if done then
  return cjson.decode(done)
end
local records = tonumber(ARGV[3])
local joined, doubled = 0, {}
for i = 4, 3 + 2 * records, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    joined = joined + 1
  else
    doubled[#doubled + 1] = ARGV[i]
  end
end
for i = 4 + 2 * records, #ARGV, 2 do
  redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1])
end
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'events', tonumber(ARGV[2]))
end
redis.call('DEL', KEYS[4], KEYS[5])
local result = {joined}
for _, paper in ipairs(doubled) do result[#result + 1] = paper end
redis.call('HSET', KEYS[1], marker, cjson.encode(result))
return result

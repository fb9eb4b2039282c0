-- Credit imported upvotes once: what each paper's count adds over what was credited.
-- KEYS[1] pf:papers:seeded HASH; ARGV pairs: paper id, upvote count now.
-- Returns the increase of each pair (0 when the count did not grow): two imports
-- running at once cannot both credit the same increase.
local out = {}
for i = 1, #ARGV, 2 do
  local total = tonumber(ARGV[i + 1])
  local before = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if total > before then
    redis.call('HSET', KEYS[1], ARGV[i], total)
    out[#out + 1] = tostring(total - before)
  else
    out[#out + 1] = '0'
  end
end
return out

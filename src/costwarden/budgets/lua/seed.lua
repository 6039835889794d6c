-- seed.lua: load counters computed from the ledger, without overwriting any that exist.
--
-- KEYS[1] the tenant's ready key; KEYS[1 + i] counter i
-- ARGV[1] 1: this is all of the tenant's counters (a rebuild): mark the tenant as loaded,
--         with the time (ARGV[3]) unless it is marked already: a lease reserved before that
--         time was lost with the counters (settle.lua and renew.lua tell by it)
-- ARGV[2] JSON: per counter [kind, value, ttl]: kind "c" (calendar, value = settled amount)
--         or "r" (rolling, value = [[bucket, amount], ...]); ttl 0 keeps it forever
-- ARGV[3] now, epoch milliseconds (the caller's clock)
-- Other processes may already be counting into a counter, so fields are only filled when
-- absent (HSETNX).

local function int(x)
  return string.format('%d', x)
end

for i, s in ipairs(cjson.decode(ARGV[2])) do
  local key = KEYS[1 + i]
  if s[1] == 'c' then
    redis.call('HSETNX', key, 'u', int(s[2]))
  else
    for _, bv in ipairs(s[2]) do
      redis.call('HSETNX', key, int(bv[1]), int(bv[2]))
    end
  end
  if s[3] > 0 and redis.call('EXISTS', key) == 1 then
    redis.call('EXPIRE', key, int(s[3]))
  end
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
end
return 1

-- unstrand.lua: settle one dead process's stranded slice (purge.lua) by what the ledger says
-- it really spent, once.
--
-- KEYS[1] the tenant's stranded hash, KEYS[2] the counter, KEYS[3] the dead lease's counted
--         hash (slices.lua: what its calls counted in each counter)
-- ARGV[1] the stranded entry's field
-- ARGV[2] what the ledger holds of the dead process in this counter's window (its rows carry
--         its slice lease id), in counter units
-- The purge counted the slice's exposed part as spent; what the ledger holds beyond what the
-- dead process's calls had counted replaces it. Whoever runs this first for an entry applies
-- it (the entry is removed); a later run does nothing.
-- Returns 1 when applied, 0 when the entry was gone.

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local e = cjson.decode(raw)
redis.call('HDEL', KEYS[1], ARGV[1])
local counted = tonumber(redis.call('HGET', KEYS[3], KEYS[2]) or '0')
local unreported = math.max(0, tonumber(ARGV[2]) - counted)
local delta = unreported - e[2]
if delta ~= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'u', string.format('%d', delta))
end
redis.call('HDEL', KEYS[3], KEYS[2])
return 1

-- add.lua: count, exactly once, a request admitted and settled on a gateway process's own
-- counters while Redis could not be reached (redis.on_unavailable = "fail_open").
--
-- KEYS: for each involved tenant t = 1..T: ready, done (KEYS[2t-1], KEYS[2t]); then one
--       counter key per check (KEYS[2T + i]).
-- ARGV[1] the request's lease id
-- ARGV[2] number of tenants T
-- ARGV[3] JSON: per check [tenant (1-based), rolling (0/1), bucket, ttl, actual amount]
-- ARGV[4] now, epoch milliseconds (the caller's clock)
-- ARGV[5] when the request settled (its ledger row was written after), epoch milliseconds
-- ARGV[6] how long tombstones are kept, milliseconds
--
-- Per tenant: not loaded (no "ready") -> only a tombstone: the rebuild from the ledger will
-- count the request's row; rebuilt after the request settled -> only a tombstone: the
-- rebuild counted it; a tombstone already -> nothing (this add ran before); otherwise the
-- actual amounts are added and a tombstone left.
-- Returns the number of tenants the amounts were added in.

local function int(x)
  return string.format('%d', x)
end

local T = tonumber(ARGV[2])
local id, now = ARGV[1], tonumber(ARGV[4])
local settled_at, keep = tonumber(ARGV[5]), tonumber(ARGV[6])

local add = {}
local added = 0
for t = 1, T do
  local ready_at = redis.call('GET', KEYS[2 * t - 1])
  local done = KEYS[2 * t]
  add[t] = false
  if not redis.call('ZSCORE', done, id) then
    add[t] = ready_at ~= false and (tonumber(ready_at) or 0) <= settled_at
    redis.call('ZADD', done, 'GT', int(now), id)
    redis.call('ZREMRANGEBYSCORE', done, '-inf', '(' .. int(now - keep))
    redis.call('PEXPIRE', done, int(keep))
    if add[t] then
      added = added + 1
    end
  end
end

for i, c in ipairs(cjson.decode(ARGV[3])) do
  if add[c[1]] and c[5] ~= 0 then
    local key = KEYS[2 * T + i]
    if c[2] == 1 then
      redis.call('HINCRBY', key, int(c[3]), int(c[5]))
    else
      redis.call('HINCRBY', key, 'u', int(c[5]))
    end
    if c[4] > 0 then
      redis.call('EXPIRE', key, int(c[4]))
    end
  end
end
return added

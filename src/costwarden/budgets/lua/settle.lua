-- settle.lua: replace one request's reservations by what it really used (policy.apply_settle),
-- exactly once, however often it is sent.
--
-- KEYS: for each involved tenant t = 1..T: ready, leases, lease (KEYS[3t-2 .. 3t]); then one
--       counter key per check (KEYS[3T + i]); then per tenant: purged, done (the last 2T).
-- ARGV[1] lease id
-- ARGV[2] number of tenants T
-- ARGV[3] JSON: per check [tenant (1-based), rolling (0/1), limit, bucket, first, ttl,
--         reserved amount, actual amount]
-- ARGV[4] now, epoch milliseconds (the caller's clock)
-- ARGV[5] when the lease was reserved, epoch milliseconds (-1: unknown)
-- ARGV[6] when this settle was first sent, if this is a retry (-1: the first attempt)
-- ARGV[7] how long tombstones are kept, milliseconds
--
-- A settle may run twice (its caller timed out and sent it again) and a lease may be gone
-- for several reasons, so per tenant:
--   held      the lease is recorded: its reservation is replaced by the actual amounts.
--   done      a tombstone says it was settled already (or released): nothing.
--   purged    it expired and a reserve gave its reservation back (marked in "purged"): the
--             actual amounts are added, unheld.
--   lost      the tenant was rebuilt from the ledger (the "ready" key holds when) after the
--             lease was reserved and before this request's ledger row was written (this is
--             the first attempt, or the rebuild came before the first attempt): the actual
--             amounts are added, unheld -- the rebuild could not include them.
--   unknown   otherwise, the first attempt of this settle already ran: nothing.
-- Every outcome but a plain "held" leaves a tombstone (kept ARGV[7] ms), so that a retry, a
-- renewal or a reserve arriving later does nothing; "held" does too when the lease was
-- reserved before the rebuild (a retry could not tell it from "lost" otherwise). A tenant
-- whose counters are not loaded is only tombstoned: the rebuild from the ledger will include
-- this request.
-- Returns JSON text: the room left in each check afterwards.

local function int(x)
  return string.format('%d', x)
end

local T = tonumber(ARGV[2])
local id, now = ARGV[1], tonumber(ARGV[4])
local reserved_at, first_sent = tonumber(ARGV[5]), tonumber(ARGV[6])
local keep = tonumber(ARGV[7])

-- Tombstones older than ARGV[7] are pruned whenever one is written; the key's own expiry
-- drops the rest when none has been written for that long.
local function tombstone(t)
  local done = KEYS[#KEYS - 2 * (T - t)]
  redis.call('ZADD', done, 'GT', int(now), id)
  redis.call('ZREMRANGEBYSCORE', done, '-inf', '(' .. int(now - keep))
  redis.call('PEXPIRE', done, int(keep))
end

local ready, mode = {}, {}
for t = 1, T do
  local ready_at = redis.call('GET', KEYS[3 * t - 2])
  ready[t] = ready_at ~= false
  mode[t] = 'none'
  if ready[t] then
    ready_at = tonumber(ready_at) or 0
    local rebuilt_since = reserved_at >= 0 and reserved_at < ready_at
    if redis.call('ZREM', KEYS[3 * t - 1], id) == 1 then
      redis.call('HDEL', KEYS[3 * t], id)
      mode[t] = 'held'
      if rebuilt_since then
        tombstone(t)
      end
    elseif redis.call('ZSCORE', KEYS[#KEYS - 2 * (T - t)], id) then
      mode[t] = 'none'
    else
      if redis.call('ZREM', KEYS[#KEYS - 2 * (T - t) - 1], id) == 1 then
        mode[t] = 'unheld'
      elseif rebuilt_since and (first_sent < 0 or ready_at <= first_sent) then
        mode[t] = 'unheld'
      end
      tombstone(t)
    end
  else
    tombstone(t)
  end
end

local checks = cjson.decode(ARGV[3])
local base = 3 * T
for i, c in ipairs(checks) do
  local m = mode[c[1]]
  if m ~= 'none' then
    local key, amount, actual = KEYS[base + i], c[7], c[8]
    local held = m == 'held'
    if c[2] == 1 then
      local delta = actual
      if held then
        delta = actual - amount
      end
      redis.call('HINCRBY', key, int(c[4]), int(delta))
    else
      if held then
        redis.call('HINCRBY', key, 'r', int(-amount))
      end
      redis.call('HINCRBY', key, 'u', int(actual))
    end
    if c[6] > 0 then
      redis.call('EXPIRE', key, int(c[6]))
    end
  end
end

local rooms = {}
for i, c in ipairs(checks) do
  local key, limit = KEYS[base + i], c[3]
  if c[2] == 1 then
    local first = c[5]
    local flat = redis.call('HGETALL', key)
    local total, stale = 0, {}
    for j = 1, #flat, 2 do
      if tonumber(flat[j]) < first then
        stale[#stale + 1] = flat[j]
      else
        total = total + tonumber(flat[j + 1])
      end
    end
    if #stale > 0 and ready[c[1]] then
      redis.call('HDEL', key, unpack(stale))
    end
    rooms[i] = int(limit - total)
  else
    local ur = redis.call('HMGET', key, 'u', 'r')
    rooms[i] = int(limit - (tonumber(ur[1]) or 0) - (tonumber(ur[2]) or 0))
  end
end
return '[' .. table.concat(rooms, ',') .. ']'

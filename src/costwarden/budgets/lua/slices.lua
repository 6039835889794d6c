-- slices.lua: one process's leased slices of one tenant's counters (budgets/leased.py), in
-- one round trip: count what was spent against them, then grow, keep or give them back.
-- purge.lua is prepended.
--
-- A slice is a reservation this process holds in a counter -- in "r" for a calendar counter,
-- in the current bucket for a rolling one -- recorded as one entry of the process's slice
-- lease (an ordinary lease: renewed by every call, purged by any reserve or slices call once
-- it expired; purge.lua counts a dead process's slices as spent). The process admits
-- requests against its slices locally, without a round trip.
--
-- KEYS: ready, leases, lease, purged, gens, stranded, counted (this lease's: what its calls
--       have counted as spent in each calendar counter, over all its slices of it, for
--       unstrand.lua) (the tenant's), then one counter key per op
-- ARGV[1] the slice lease id (one per process and tenant)
-- ARGV[2] now, epoch milliseconds (the caller's clock)
-- ARGV[3] the lease's new expiry, epoch milliseconds
-- ARGV[4] at most this many expired leases are purged
-- ARGV[5] the call's generation: calls of one lease id carry increasing ones; a call that
--         arrives after a later one (it timed out at its caller and ran late) does nothing
-- ARGV[6] gateway processes sharing the counters (each takes at most 1 / (2 P) of the room)
-- ARGV[7] JSON: per op [rolling (0/1), field ("r" or the bucket), limit, ttl, first,
--         used (all this slice has consumed so far: cumulative, so a resent call counts it
--         once), keep (never shrink below this: what local requests hold or may take while
--         this call runs), want (the size the process would like), need (one request's
--         amount: a slice smaller than this is useless), forget (1: drop the entry; keep and
--         want are 0 then), exposed (what the process may have admitted without telling when
--         this call is answered: its requests in flight plus what it may admit before its
--         next call; a purge counts that much as spent and gives the rest back), since (a
--         calendar counter's window start, epoch ms: a purge records it for unstrand.lua)]
-- ARGV[8] how long the generations are kept, milliseconds (past any late call)
-- ARGV[9] 1: the process is closing (everything it admitted is counted by this call)
-- Returns JSON text: {"lost":true} (the tenant's counters are not loaded), {"purged":true}
-- (this lease expired and was purged: its slices are gone and counted as spent),
-- {"stale":true}, or {"slices":[[granted, room left outside the slices, tight (0/1)], ...],
-- "stranded": dead processes' slices waiting for unstrand.lua}.

local function int(x)
  return string.format('%d', x)
end

local id, now_ms, gen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[5])
local ready, leases, lease, purged, gens = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local stranded, counted = KEYS[6], KEYS[7]
local COUNTED_KEEP_MS = 35 * 86400000 -- past a month's window and its grace

if redis.call('EXISTS', ready) == 0 then
  return '{"lost":true}'
end
purge_expired(leases, lease, purged, stranded, now_ms, tonumber(ARGV[4]))
local last = tonumber(redis.call('HGET', gens, id) or '-1')
if gen <= last then
  return '{"stale":true}'
end
redis.call('HSET', gens, id, ARGV[5])
redis.call('PEXPIRE', gens, ARGV[8])
if redis.call('ZREM', purged, id) == 1 then
  return '{"purged":true}'
end

-- The stored entries: [counter key, field, granted, 1, used counted so far, exposed].
local stored = {}
local order = {}
local raw = redis.call('HGET', lease, id)
if raw then
  for _, e in ipairs(cjson.decode(raw)) do
    local k = e[1] .. '\n' .. e[2]
    stored[k] = e
    order[#order + 1] = k
  end
end

local P = tonumber(ARGV[6])
local out = {}
for i, op in ipairs(cjson.decode(ARGV[7])) do
  local key = KEYS[7 + i]
  local rolling, field, limit, ttl, first = op[1] == 1, op[2], op[3], op[4], op[5]
  local used, keep, want, need, forget = op[6], op[7], op[8], op[9], op[10] == 1
  local exposed, since = op[11], op[12]
  local skip = false
  local k = key .. '\n' .. field
  local e = stored[k]
  if e == nil and used > 0 then
    -- Gone though it consumed something: a forget that ran already (this is its resend).
    skip = true
  elseif e == nil then
    e = { key, field, 0, 1, 0, 0, since }
    stored[k] = e
    order[#order + 1] = k
  end
  local target, room, tight = 0, 0, 0
  if not skip then
    -- 1. What was consumed since the last call leaves the slice: a calendar counter moves it
    -- from reserved to settled; a rolling bucket already counts it.
    local delta_used = used - e[5]
    if delta_used > 0 then
      if not rolling then
        redis.call('HINCRBY', key, 'r', int(-delta_used))
        redis.call('HINCRBY', key, 'u', int(delta_used))
        redis.call('HINCRBY', counted, key, int(delta_used))
        redis.call('PEXPIRE', counted, COUNTED_KEEP_MS)
      end
      e[3] = e[3] - delta_used
      e[5] = used
    end
    -- 2. The room outside every slice and reservation.
    if rolling then
      local total = 0
      local flat = redis.call('HGETALL', key)
      for j = 1, #flat, 2 do
        if tonumber(flat[j]) >= first then
          total = total + tonumber(flat[j + 1])
        end
      end
      room = limit - total
    else
      local ur = redis.call('HMGET', key, 'u', 'r')
      room = limit - (tonumber(ur[1]) or 0) - (tonumber(ur[2]) or 0)
    end
    -- 3. The new size: at most an even share of what is left (2 P shares, so half of it stays
    -- for the others and for exact reservations), nothing when a share would not hold one
    -- request (tight: the process drains its slice and reserves exactly), never below keep.
    -- A process's slices of one rolling counter (this bucket's, and the next one's, taken
    -- just before it starts) share one share, the older bucket's first: the next bucket's
    -- slice gets what is left of it, or nothing, without making the counter tight.
    local older = 0
    if rolling then
      for _, other in ipairs(order) do
        local o = stored[other]
        if o ~= nil and o[1] == key and tonumber(o[2]) < tonumber(field) then
          older = older + math.max(o[3], 0)
        end
      end
    end
    local fair = math.floor((room + math.max(e[3], 0) + older) / (2 * P))
    if not forget then
      if fair - older >= need then
        target = math.min(want, fair - older)
      elseif older == 0 or fair < need then
        tight = 1
      end
    end
    target = math.max(target, keep)
    local grow = target - e[3]
    if grow ~= 0 then
      local f = 'r'
      if rolling then
        f = field
      end
      redis.call('HINCRBY', key, f, int(grow))
      room = room - grow
    end
    e[3] = target
    e[6] = math.min(exposed, target)
    if ttl > 0 then
      redis.call('EXPIRE', key, int(ttl))
    end
    if forget and target == 0 then
      stored[k] = nil
    end
  end
  out[i] = '[' .. int(target) .. ',' .. int(room) .. ',' .. int(tight) .. ']'
end

local kept = {}
for _, k in ipairs(order) do
  local e = stored[k]
  if e ~= nil then
    kept[#kept + 1] = '[' .. cjson.encode(e[1]) .. ',' .. cjson.encode(e[2]) .. ',' .. int(e[3])
      .. ',1,' .. int(e[5]) .. ',' .. int(e[6]) .. ',' .. int(e[7]) .. ']'
  end
end
if #kept > 0 then
  redis.call('HSET', lease, id, '[' .. table.concat(kept, ',') .. ']')
  redis.call('ZADD', leases, ARGV[3], id)
else
  redis.call('HDEL', lease, id)
  redis.call('ZREM', leases, id)
end
if ARGV[9] == '1' then
  -- Every request it admitted has been counted: nothing of it can be stranded later. (An
  -- idle process keeps its figures: its later slices count on from them.)
  redis.call('DEL', counted)
end
return '{"slices":[' .. table.concat(out, ',') .. '],"stranded":'
  .. int(redis.call('HLEN', stranded)) .. '}'

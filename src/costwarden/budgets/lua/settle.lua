-- settle.lua: replace one request's reservations by what it really used (policy.apply_settle).
--
-- KEYS: for each involved tenant t = 1..T: ready, leases, lease (KEYS[3t-2 .. 3t]); then one
--       counter key per check (KEYS[3T + i]).
-- ARGV[1] lease id
-- ARGV[2] number of tenants T
-- ARGV[3] JSON: per check [tenant (1-based), rolling (0/1), limit, bucket, first, ttl,
--         reserved amount, actual amount]
-- Per tenant, the reservation is still *held* if the lease is still recorded (it was not
-- purged after expiring); the lease is deleted either way. A tenant whose counters are not
-- loaded is left alone: the rebuild from the ledger will include this request.
-- Returns JSON text: the room left in each check afterwards.

local function int(x)
  return string.format('%d', x)
end

local T = tonumber(ARGV[2])
local ready, held = {}, {}
for t = 1, T do
  ready[t] = redis.call('EXISTS', KEYS[3 * t - 2]) == 1
  held[t] = false
  if ready[t] then
    held[t] = redis.call('ZREM', KEYS[3 * t - 1], ARGV[1]) == 1
    redis.call('HDEL', KEYS[3 * t], ARGV[1])
  end
end

local checks = cjson.decode(ARGV[3])
local base = 3 * T
for i, c in ipairs(checks) do
  local t = c[1]
  if ready[t] then
    local key, amount, actual = KEYS[base + i], c[7], c[8]
    if c[2] == 1 then
      local delta = actual
      if held[t] then
        delta = actual - amount
      end
      redis.call('HINCRBY', key, int(c[4]), int(delta))
    else
      if held[t] then
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

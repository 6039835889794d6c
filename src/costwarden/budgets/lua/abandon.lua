-- abandon.lua: give up a lease whose reserve timed out at its caller (its outcome unknown).
--
-- KEYS: for each involved tenant t = 1..T: leases, lease, purged, done (KEYS[4t-3 .. 4t])
-- ARGV[1] lease id
-- ARGV[2] now, epoch milliseconds (the caller's clock)
-- ARGV[3] how long tombstones are kept, milliseconds
-- If the reserve ran, its reservations are given back (from what the lease recorded, as an
-- expired lease's are); either way the lease is tombstoned, so that the reserve, if it has
-- not run yet, reserves nothing when it does. Running this twice changes nothing more.
-- Returns the number of tenants whose reservation was given back.

local function int(x)
  return string.format('%d', x)
end

local id, now = ARGV[1], tonumber(ARGV[2])
local given = 0
for t = 1, #KEYS / 4 do
  local leases, lease, purged, done = KEYS[4 * t - 3], KEYS[4 * t - 2], KEYS[4 * t - 1], KEYS[4 * t]
  if redis.call('ZREM', leases, id) == 1 then
    local entries = redis.call('HGET', lease, id)
    if entries then
      for _, e in ipairs(cjson.decode(entries)) do
        -- A counter (or bucket) that is gone was expired or rebuilt without this reservation.
        if redis.call('HEXISTS', e[1], e[2]) == 1 then
          redis.call('HINCRBY', e[1], e[2], int(-e[3]))
        end
      end
      redis.call('HDEL', lease, id)
      given = given + 1
    end
  end
  redis.call('ZREM', purged, id)
  redis.call('ZADD', done, 'GT', int(now), id)
  redis.call('ZREMRANGEBYSCORE', done, '-inf', '(' .. int(now - tonumber(ARGV[3])))
  redis.call('PEXPIRE', done, ARGV[3])
end
return given

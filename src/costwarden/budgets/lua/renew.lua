-- renew.lua: keep this process's leases of one tenant alive.
--
-- KEYS[1] ready, KEYS[2] leases (zset id -> expiry ms), KEYS[3] lease (hash id -> entries),
-- KEYS[4] purged (zset id -> when purged), KEYS[5] done (zset id -> tombstone time)
-- ARGV[1] the new expiry, epoch milliseconds
-- ARGV[2] JSON: [[lease id, reserved at (epoch ms), [[counter key, field, amount, ttl], ...]],
--         ...]
-- A lease still recorded gets the new expiry (never an earlier one). A lease that is gone
-- because it was purged after expiring while this process was stalled (marked in "purged"),
-- or lost with a flush (reserved before the tenant was rebuilt: "ready" holds when) is
-- recorded again and its reservations are added back: the request is still in flight. A
-- lease with a tombstone, or gone for any other reason, was settled or released already --
-- this renewal was sent before that and ran late -- and stays gone. Nothing is done while the
-- tenant's counters are not loaded.
-- Returns {leases extended, leases re-created}.

local function int(x)
  return string.format('%d', x)
end

local ready_at = redis.call('GET', KEYS[1])
if not ready_at then
  return { 0, 0 }
end
ready_at = tonumber(ready_at) or 0
local extended, recreated = 0, 0
for _, item in ipairs(cjson.decode(ARGV[2])) do
  local id, reserved_at, entries = item[1], item[2], item[3]
  if redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[2], 'GT', ARGV[1], id)
    extended = extended + 1
  elseif not redis.call('ZSCORE', KEYS[5], id)
    and (redis.call('ZREM', KEYS[4], id) == 1 or reserved_at < ready_at) then
    local stored = {}
    for i, e in ipairs(entries) do
      redis.call('HINCRBY', e[1], e[2], int(e[3]))
      if e[4] > 0 then
        redis.call('EXPIRE', e[1], int(e[4]))
      end
      stored[i] = '[' .. cjson.encode(e[1]) .. ',' .. cjson.encode(e[2]) .. ',' .. int(e[3]) .. ']'
    end
    redis.call('HSET', KEYS[3], id, '[' .. table.concat(stored, ',') .. ']')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    recreated = recreated + 1
  end
end
return { extended, recreated }

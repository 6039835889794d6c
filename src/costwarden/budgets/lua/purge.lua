-- purge.lua: prepended to reserve.lua and slices.lua (RedisStore loads them so).
--
-- purge_expired(leases, lease, purged, stranded, now_ms, max): give back the reservations of
-- at most ``max`` leases of one tenant whose holder stopped renewing them (expiry <= now_ms),
-- and mark each in ``purged`` (kept PURGED_KEEP_MS) so that a late settle still counts its
-- request.
-- A leased slice (an entry with a 4th element, budgets/leased.py) is given back but for its
-- exposed part (6th): what its process may have admitted without having told Redis yet (its
-- requests in flight at its last call, and what it was allowed to admit before the next). That
-- part is counted as spent -- a calendar slice's in "u", a rolling one's left in its bucket --
-- so the cap holds whatever the dead process did. A calendar slice's is also recorded in
-- ``stranded`` (field: lease id, newline, counter key; value: [counter key, exposed, window
-- start ms, purged at ms]): a survivor then counts what the ledger says the dead process
-- really spent instead (unstrand.lua), and the rest is free again (docs/budgets.md, "Leased
-- slices").

local PURGED_KEEP_MS = 86400000

local function purge_int(x)
  return string.format('%d', x)
end

local function purge_expired(leases, lease, purged, stranded, now_ms, max)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now_ms, 'LIMIT', 0, max)
  for _, id in ipairs(expired) do
    local entries = redis.call('HGET', lease, id)
    if entries then
      for _, e in ipairs(cjson.decode(entries)) do
        -- A counter (or bucket) that is gone was expired or rebuilt without this reservation.
        if redis.call('HEXISTS', e[1], e[2]) == 1 then
          if e[4] == nil then
            redis.call('HINCRBY', e[1], e[2], purge_int(-e[3]))
          else
            local spent = math.max(0, math.min(e[6], e[3]))
            if e[2] == 'r' then
              redis.call('HINCRBY', e[1], 'r', purge_int(-e[3]))
              redis.call('HINCRBY', e[1], 'u', purge_int(spent))
              if spent > 0 then
                redis.call('HSET', stranded, id .. '\n' .. e[1], '[' .. cjson.encode(e[1]) .. ','
                  .. purge_int(spent) .. ',' .. purge_int(e[7]) .. ',' .. purge_int(now_ms) .. ']')
              end
            else
              redis.call('HINCRBY', e[1], e[2], purge_int(spent - e[3]))
            end
          end
        end
      end
      redis.call('HDEL', lease, id)
      redis.call('ZADD', purged, now_ms, id)
    end
    redis.call('ZREM', leases, id)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', purged, '-inf', '(' .. purge_int(now_ms - PURGED_KEEP_MS))
    redis.call('PEXPIRE', purged, PURGED_KEEP_MS)
  end
end

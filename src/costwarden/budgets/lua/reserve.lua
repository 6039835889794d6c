-- reserve.lua: decide and reserve one request atomically, in one round trip.
--
-- A line-by-line port of costwarden.budgets.policy.decide (and apply_grant): the Python
-- tests run the same scenarios against this script and the in-process store and require
-- identical results. Lua numbers are doubles: every counter value is below 2^53 and is
-- kept exact here; products that could pass 2^53 are computed without forming them.
--
-- KEYS: for each involved tenant t = 1..T: ready, leases, lease (KEYS[3t-2 .. 3t]); then one
--       counter key per check (KEYS[3T + i]); then per tenant: purged, done; then per
--       tenant: stranded (the last T; purge.lua).
-- ARGV[1] lease id
-- ARGV[2] now, epoch milliseconds (the caller's clock, never Redis TIME)
-- ARGV[3] the lease's expiry, epoch milliseconds
-- ARGV[4] at most this many expired leases are purged per tenant
-- ARGV[5] JSON: the tenant names, in KEYS order
-- ARGV[6] JSON: the ask: [in_bound_tokens, in_est_tokens, in_bound_nanos, in_est_nanos,
--         out_pico, want_out (-1: none), max_out, min_out, est_out, has_output (0/1),
--         choices (the output cap applies to each of them)]
-- ARGV[7] JSON: per check [tenant (1-based), rolling (0/1), limit, hard (0/1), metric,
--         bucket, first, ttl]
-- Returns JSON text: {"lost": [tenant, ...]} | {"closed": true} | {"refusal": kind, ...} |
-- {"out": ..., ...}.
-- Numbers are written with %d: cjson.encode keeps only 14 significant digits.

local NO_CAP = 4611686018427387904 -- 2^62, policy._NO_CAP

local function int(x)
  return string.format('%d', x)
end

local function ints(list)
  local parts = {}
  for i, x in ipairs(list) do
    parts[i] = int(x)
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- floor(m * r / p) for integers 0 <= r < p < 2^53, m >= 0: binary long multiplication
-- modulo p, so every intermediate stays below p (exact in doubles).
local function mul_div_floor(r, m, p)
  local bits = {}
  while m > 0 do
    local bit = m % 2
    bits[#bits + 1] = bit
    m = (m - bit) / 2
  end
  local q, acc = 0, 0 -- q * p + acc == k * r for the bits of m consumed so far
  for i = #bits, 1, -1 do
    q = q * 2
    if acc >= p - acc then
      acc = acc - (p - acc)
      q = q + 1
    else
      acc = acc + acc
    end
    if bits[i] == 1 then
      if r >= p - acc then
        acc = r - (p - acc)
        q = q + 1
      else
        acc = acc + r
      end
    end
  end
  return q
end

-- floor(d * 1000 / p) for 0 <= d, 0 < p: exact below 2^53; larger results only ever meet
-- min() with an output cap and comparisons with a threshold, so NO_CAP stands in for them.
local function milli_div(d, p)
  local r = math.fmod(d, p)
  local a = (d - r) / p
  if a >= NO_CAP / 1000 then
    return NO_CAP
  end
  return math.min(a * 1000 + mul_div_floor(r, 1000, p), NO_CAP)
end

-- ceil(x * p / 1000) for integers 0 <= x, 0 <= p (policy._ceil_div(x * p, 1000)), exact
-- whenever the result is below 2^53, without forming x * p: with p = 1000 ph + pl and
-- x = 1000 xh + xl, x p / 1000 = x ph + xh pl + xl pl / 1000, each term at most the result.
local function ceil_milli(x, p)
  local pl = math.fmod(p, 1000)
  local ph = (p - pl) / 1000
  local xl = math.fmod(x, 1000)
  local xh = (x - xl) / 1000
  local lo = xl * pl -- below 10^6
  local rem = math.fmod(lo, 1000)
  local c = (lo - rem) / 1000
  if rem > 0 then
    c = c + 1
  end
  return x * ph + xh * pl + c
end

local now_ms = ARGV[2]
local tenants = cjson.decode(ARGV[5])
local T = #tenants

-- (a) Every involved tenant's counters must be loaded, or nothing is decided.
local lost = {}
for t = 1, T do
  if redis.call('EXISTS', KEYS[3 * t - 2]) == 0 then
    lost[#lost + 1] = cjson.encode(tenants[t])
  end
end
if #lost > 0 then
  return '{"lost":[' .. table.concat(lost, ',') .. ']}'
end

-- (a2) A lease that was already settled or released (a tombstone in "done") is not created:
-- this reserve timed out at its caller, which gave the lease up, and ran late. Expired
-- leases purged in (b) are remembered in "purged" (purge.lua), so that their late
-- settle still counts what the request spent.
local MARKERS = #KEYS - T -- where the purged and done keys end
local function purged_key(t)
  return KEYS[MARKERS - 2 * (T - t) - 1]
end
for t = 1, T do
  if redis.call('ZSCORE', KEYS[MARKERS - 2 * (T - t)], ARGV[1]) then
    return '{"closed":true}'
  end
end

-- (b) Give back the reservations of leases whose holder stopped renewing them (purge.lua).
local purge_max = tonumber(ARGV[4])
for t = 1, T do
  purge_expired(KEYS[3 * t - 1], KEYS[3 * t], purged_key(t), KEYS[MARKERS + t], now_ms,
    purge_max)
end

-- (c) Read the views; a rolling counter forgets the buckets that left its window.
local checks = cjson.decode(ARGV[7])
local base = 3 * T
local views = {}
for i, c in ipairs(checks) do
  local key = KEYS[base + i]
  local view = { used = 0, reserved = 0, buckets = {} }
  if c[2] == 1 then
    local first = c[7]
    local flat = redis.call('HGETALL', key)
    local stale = {}
    for j = 1, #flat, 2 do
      local b = tonumber(flat[j])
      if b < first then
        stale[#stale + 1] = flat[j]
      else
        view.buckets[#view.buckets + 1] = { b, tonumber(flat[j + 1]) }
      end
    end
    if #stale > 0 then
      redis.call('HDEL', key, unpack(stale))
    end
    table.sort(view.buckets, function(x, y) return x[1] < y[1] end)
  else
    local ur = redis.call('HMGET', key, 'u', 'r')
    view.used = tonumber(ur[1]) or 0
    view.reserved = tonumber(ur[2]) or 0
  end
  views[i] = view
end

-- (d) decide: policy.decide, line by line.
local ask = cjson.decode(ARGV[6])
local in_bound_tokens, in_est_tokens = ask[1], ask[2]
local in_bound_nanos, in_est_nanos = ask[3], ask[4]
local out_pico, want_out, max_out, min_out, est_out = ask[5], ask[6], ask[7], ask[8], ask[9]
local has_output = ask[10] == 1
local choices = ask[11]

local function window_total(view)
  local total = 0
  for _, bv in ipairs(view.buckets) do
    total = total + bv[2]
  end
  return total
end

local function estimate(c)
  local metric = c[5]
  if metric == 'requests' then
    return 1
  end
  local out = 0
  if has_output then
    if want_out < 0 then
      out = est_out
    else
      out = math.min(est_out, want_out)
    end
    out = out * choices
  end
  if metric == 'tokens' then
    return in_est_tokens + out
  end
  return in_est_nanos + ceil_milli(out, out_pico)
end

local function hard_terms(metric)
  if metric == 'usd' then
    return in_bound_nanos, out_pico * choices
  end
  if metric == 'tokens' then
    return in_bound_tokens, 1000 * choices
  end
  return 1, 0
end

local function fits(room, fixed, per)
  if room < fixed then
    return -1
  end
  if per == 0 then
    return NO_CAP
  end
  return milli_div(room - fixed, per)
end

-- The bucket whose departure frees enough room (nil: the whole window); Python turns it
-- into seconds exactly as policy.rate_retry_after does.
local function retry_bucket(view, c, amount)
  local limit = c[3]
  local need = window_total(view) + amount - limit
  if amount > limit then
    return nil
  end
  local freed = 0
  for _, bv in ipairs(view.buckets) do
    freed = freed + bv[2]
    if freed >= need then
      return bv[1]
    end
  end
  return nil
end

local function refusal_json(r)
  local bucket = 'null'
  if r.bucket then
    bucket = int(r.bucket)
  end
  return '{"refusal":"' .. r.kind .. '","index":' .. int(r.index - 1) .. ',"used":'
    .. int(r.used) .. ',"reserved":' .. int(r.reserved) .. ',"bucket":' .. bucket .. '}'
end

local function worse(current, new)
  if current == nil or (new.kind == 'budget' and current.kind ~= 'budget') then
    return new
  end
  return current
end

local function kind(gone)
  if gone then
    return 'budget'
  end
  return 'inflight'
end

local est = {}
for i, c in ipairs(checks) do
  est[i] = estimate(c)
end
for i, c in ipairs(checks) do
  if c[2] == 1 then
    local total = window_total(views[i])
    if total + est[i] > c[3] then
      return refusal_json({
        kind = 'rate', index = i, used = total, reserved = 0,
        bucket = retry_bucket(views[i], c, est[i]),
      })
    end
  end
end

local cap = 0
if has_output then
  if want_out < 0 then
    cap = max_out
  else
    cap = want_out
  end
end
local threshold = math.min(min_out, cap)
local out = cap
local bounded = false
local refusal = nil
for i, c in ipairs(checks) do
  if c[2] == 0 then
    local limit, view = c[3], views[i]
    if c[4] == 1 then
      local fixed, per = hard_terms(c[5])
      bounded = bounded or per > 0
      local n = fits(limit - view.used - view.reserved, fixed, per)
      if n < threshold then
        local gone = fits(limit - view.used, fixed, per) < threshold
        refusal = worse(refusal, {
          kind = kind(gone), index = i, used = view.used, reserved = view.reserved,
        })
      end
      out = math.min(out, n)
    else
      if view.used + view.reserved >= limit then
        local gone = view.used >= limit
        refusal = worse(refusal, {
          kind = kind(gone), index = i, used = view.used, reserved = view.reserved,
        })
      end
    end
  end
end
if refusal ~= nil then
  return refusal_json(refusal)
end

local amounts, remaining = {}, {}
for i, c in ipairs(checks) do
  local limit, view = c[3], views[i]
  if c[2] == 1 then
    amounts[i] = est[i]
    remaining[i] = limit - window_total(view) - est[i]
  else
    local amount
    if c[4] == 1 then
      local fixed, per = hard_terms(c[5])
      amount = fixed + ceil_milli(out, per)
    else
      amount = est[i]
    end
    amounts[i] = amount
    remaining[i] = limit - view.used - view.reserved - amount
  end
end
local clamp = bounded and has_output and (want_out < 0 or out < want_out)

-- (e) Apply the grant and record the lease, per tenant, so that it can be undone if this
-- request's gateway dies before settling it.
local entries = {}
for t = 1, T do
  entries[t] = {}
end
for i, c in ipairs(checks) do
  local key = KEYS[base + i]
  local field = 'r'
  if c[2] == 1 then
    field = int(c[6])
  end
  redis.call('HINCRBY', key, field, int(amounts[i]))
  if c[8] > 0 then
    redis.call('EXPIRE', key, int(c[8]))
  end
  local list = entries[c[1]]
  list[#list + 1] = '[' .. cjson.encode(key) .. ',"' .. field .. '",' .. int(amounts[i]) .. ']'
end
for t = 1, T do
  if #entries[t] > 0 then
    redis.call('HSET', KEYS[3 * t], ARGV[1], '[' .. table.concat(entries[t], ',') .. ']')
    redis.call('ZADD', KEYS[3 * t - 1], ARGV[3], ARGV[1])
  end
end

local out_json = 'null'
if clamp then
  out_json = int(out)
end
return '{"out":' .. out_json .. ',"amounts":' .. ints(amounts) .. ',"remaining":'
  .. ints(remaining) .. '}'

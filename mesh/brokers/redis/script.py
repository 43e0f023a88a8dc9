"""The Lua script behind the Redis Streams adapter: every multi-step group operation, atomic.

Called as ``EVALSHA sha 2 <stream> <delay set> <group> <consumer> <mode> <args...>``; the
``*_all`` modes take any number of ``<stream> <delay set>`` pairs as keys (one call for every
stream a reader consumes: the housekeeping of a thousand subscriptions is one script). Entries
come back as ``[id, [field, value, ...]]`` with their delivery counts (XPENDING
``times_delivered``), which become ``Delivery.attempt``. Ids in the delay set are never claimed
for delivery except by ``due``, which takes them out of it first.

=========  ===================================================================================
mode       what it does
=========  ===================================================================================
ids        XCLAIM the given ids to the consumer (count + 1): an immediate ``nack()``
due        pop the ids whose due time (server clock) has come, XCLAIM them: ``nack(delay)``
delay      put one id in the delay set, due in ARGV ms (the entry stays pending)
auto       XAUTOCLAIM JUSTID entries idle >= min-idle, skip delayed ones, XCLAIM the rest
own        this consumer's own pending entries (a restarted stable name), page by page
renew      reset the idle time of the given ids still owned by the consumer (JUSTID): the lease
release    push this consumer's non-delayed pending entries' idle time far into the past so any
           consumer's next ``auto`` takes them; delete the consumer once it owns nothing
forget     delete other consumers that own nothing and were idle longer than ARGV ms
due_all    ``due`` for every pair: ``[pair index, entries, counts, ...]`` for pairs with due ids
auto_all   ``auto`` for every pair, ARGV: min-idle, count, one cursor per pair; returns
           ``[pair index, next cursor, entries, counts, ...]`` for pairs whose cursor moved or
           that gave entries (a pair whose group is gone is skipped)
ensure     create an empty stream (a throw-away group with MKSTREAM, destroyed at once)
=========  ===================================================================================
"""

from __future__ import annotations

__all__ = ["SCRIPT"]

SCRIPT = """
local stream, delays = KEYS[1], KEYS[2]
local group, consumer, mode = ARGV[1], ARGV[2], ARGV[3]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function not_delayed(ids)
  local keep = {}
  for i = 1, #ids do
    if not redis.call('ZSCORE', delays, ids[i]) then keep[#keep + 1] = ids[i] end
  end
  return keep
end

local function xclaim(ids, ...)
  local args = {'XCLAIM', stream, group, consumer, 0}
  for i = 1, #ids do args[#args + 1] = ids[i] end
  for i = 1, select('#', ...) do args[#args + 1] = select(i, ...) end
  return redis.call(unpack(args))
end

local function take(ids)
  local entries, counts = {}, {}
  if #ids == 0 then return {entries, counts} end
  local claimed = xclaim(ids)
  for i = 1, #claimed do
    local e = claimed[i]
    if type(e) == 'table' then
      local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
      entries[#entries + 1] = e
      counts[#counts + 1] = (p[1] and p[1][4]) or 1
    end
  end
  return {entries, counts}
end

local function own(start, count)
  local p = redis.call('XPENDING', stream, group, start, '+', count, consumer)
  local ids = {}
  for i = 1, #p do ids[i] = p[i][1] end
  local nxt = ''
  if #p >= tonumber(count) then nxt = '(' .. p[#p][1] end
  return not_delayed(ids), nxt
end

if mode == 'ids' then
  local ids = {}
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
  return take(ids)
elseif mode == 'due' then
  local ids = redis.call('ZRANGEBYSCORE', delays, '-inf', now_ms(), 'LIMIT', 0, ARGV[4])
  if #ids > 0 then redis.call('ZREM', delays, unpack(ids)) end
  return take(ids)
elseif mode == 'delay' then
  redis.call('ZADD', delays, now_ms() + tonumber(ARGV[4]), ARGV[5])
  return 1
elseif mode == 'auto' then
  local r = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[5], 'COUNT', ARGV[6], 'JUSTID')
  local got = take(not_delayed(r[2]))
  return {r[1], got[1], got[2]}
elseif mode == 'own' then
  local ids, nxt = own(ARGV[4], ARGV[5])
  local got = take(ids)
  return {nxt, got[1], got[2]}
elseif mode == 'renew' then
  local mine = {}
  for i = 4, #ARGV do
    local p = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1)
    if p[1] and p[1][2] == consumer then mine[#mine + 1] = ARGV[i] end
  end
  if #mine > 0 then xclaim(mine, 'JUSTID') end
  return #mine
elseif mode == 'release' then
  local ids, nxt = own(ARGV[4], ARGV[5])
  if #ids > 0 then xclaim(ids, 'IDLE', ARGV[6], 'JUSTID') end
  if nxt == '' and #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  end
  return nxt
elseif mode == 'forget' then
  local gone = 0
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local f = {}
    for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
    if f['name'] ~= consumer and f['pending'] == 0 and f['idle'] > tonumber(ARGV[4]) then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, f['name'])
      gone = gone + 1
    end
  end
  return gone
elseif mode == 'due_all' then
  local out, now = {}, now_ms()
  for k = 1, #KEYS, 2 do
    stream, delays = KEYS[k], KEYS[k + 1]
    local ids = redis.call('ZRANGEBYSCORE', delays, '-inf', now, 'LIMIT', 0, ARGV[4])
    if #ids > 0 then
      redis.call('ZREM', delays, unpack(ids))
      local got = take(ids)
      out[#out + 1] = (k + 1) / 2
      out[#out + 1] = got[1]
      out[#out + 1] = got[2]
    end
  end
  return out
elseif mode == 'auto_all' then
  local out = {}
  for k = 1, #KEYS, 2 do
    stream, delays = KEYS[k], KEYS[k + 1]
    local i = (k + 1) / 2
    local r = redis.pcall('XAUTOCLAIM', stream, group, consumer, ARGV[4], ARGV[5 + i], 'COUNT', ARGV[5], 'JUSTID')
    if type(r) == 'table' and r['err'] == nil then
      local ids = not_delayed(r[2])
      if r[1] ~= ARGV[5 + i] or #ids > 0 then
        local got = take(ids)
        out[#out + 1] = i
        out[#out + 1] = r[1]
        out[#out + 1] = got[1]
        out[#out + 1] = got[2]
      end
    end
  end
  return out
elseif mode == 'ensure' then
  local t = redis.call('TYPE', stream)['ok']
  if t == 'none' then
    redis.call('XGROUP', 'CREATE', stream, '_mesh.init', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', stream, '_mesh.init')
    return 'stream'
  end
  return t
end
return redis.error_reply('unknown mode ' .. tostring(mode))
"""

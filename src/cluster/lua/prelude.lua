-- The shared permit pool, every key under one prefix (ARGV[1], hash-tagged so that one slot
-- holds them all):
--   leases         HASH  lease id -> instance: the permits taken, at most the capacity
--   queue          ZSET  ticket -> arrival number: the one queue, first come, first served
--   owners         HASH  ticket -> instance
--   seq            the arrival counter
--   gen, gen_at    the pool's generation and when it began; a Redis that lost them restarted
--   settle         present for one lease after a restart: nothing is granted until every
--                  instance has counted its running requests again
--   alive:<inst>   one per live instance, expiring one lease after its last call
--   wake           the channel a freed permit is announced on, naming the instances whose
--                  tickets are first in line
-- Every script is called with ARGV[1] prefix, ARGV[2] this instance, ARGV[3] lease_ms and
-- ARGV[4] the generation this instance knows ('' at first), then its own arguments.
local P, me, lease_ms, known = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local leases, queue, owners = P .. 'leases', P .. 'queue', P .. 'owners'
redis.call('SET', P .. 'alive:' .. me, '1', 'PX', lease_ms)

local function alive(instance)
  return redis.call('EXISTS', P .. 'alive:' .. instance) == 1
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The pool's generation, and whether it is settling after a restart.
local function generation()
  local gen = redis.call('GET', P .. 'gen')
  if not gen then
    local now = now_ms()
    gen = tostring(now) .. '-' .. me
    redis.call('SET', P .. 'gen', gen)
    redis.call('SET', P .. 'gen_at', now)
  end
  if known ~= '' and known ~= gen then
    -- This instance knew an earlier pool, so Redis lost it while requests ran. Each instance
    -- counts its running requests again within a quarter lease; until a lease has passed since
    -- the new pool began, nothing new is granted.
    local left = lease_ms - (now_ms() - tonumber(redis.call('GET', P .. 'gen_at')))
    if left > 0 then
      redis.call('SET', P .. 'settle', '1', 'PX', left, 'NX')
    end
  end
  return gen, redis.call('EXISTS', P .. 'settle') == 1
end

-- Drops the entries of a hash (id -> instance) whose instance stopped renewing (crashed).
local function reap(hash)
  local all = redis.call('HGETALL', hash)
  for i = 1, #all, 2 do
    if not alive(all[i + 1]) then
      redis.call('HDEL', hash, all[i])
    end
  end
end

-- Takes back the permits of instances that stopped renewing.
local function reap_leases()
  reap(leases)
end

-- Drops tickets of instances that are gone from the head of the queue, so it never waits
-- behind them.
local function reap_head()
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)
    if #head == 0 then
      return
    end
    local owner = redis.call('HGET', owners, head[1])
    if owner and alive(owner) then
      return
    end
    redis.call('ZREM', queue, head[1])
    redis.call('HDEL', owners, head[1])
  end
end

-- Announces free permits to the instances whose tickets are first in line for them (the wake
-- message names them, so the others stay quiet). Returns whether this instance is among them;
-- it is left out of the message, as its caller grants at once.
local function announce(capacity)
  local free = capacity - redis.call('HLEN', leases)
  if free <= 0 then
    return false
  end
  local heads = redis.call('ZRANGE', queue, 0, free - 1)
  local named, seen, mine = {}, {}, false
  for _, ticket in ipairs(heads) do
    local owner = redis.call('HGET', owners, ticket)
    if owner == me then
      mine = true
    elseif owner and not seen[owner] then
      seen[owner] = true
      named[#named + 1] = owner
    end
  end
  if #named > 0 then
    redis.call('PUBLISH', P .. 'wake', table.concat(named, ' '))
  end
  return mine
end

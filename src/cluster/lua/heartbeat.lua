-- Keeps this instance alive (the prelude renews it) and counts its running requests, ARGV[6..],
-- as leases: after a Redis restart, and for requests that began on a local share while Redis
-- was away, they are missing. ARGV[5] capacity. Once a lease, one instance sweeps the whole
-- queue for tickets of instances that are gone. Announces free permits to the instances first
-- in line (this one grants after its heartbeat anyway).
-- Returns {generation, requests counted again}.
local capacity = tonumber(ARGV[5])
local gen = generation()
local counted = 0
for i = 6, #ARGV do
  if redis.call('HGET', leases, ARGV[i]) ~= me then
    redis.call('HSET', leases, ARGV[i], me)
    counted = counted + 1
  end
end
if redis.call('SET', P .. 'swept', '1', 'PX', lease_ms, 'NX') then
  local all = redis.call('HGETALL', owners)
  for i = 1, #all, 2 do
    if not alive(all[i + 1]) then
      redis.call('ZREM', queue, all[i])
      redis.call('HDEL', owners, all[i])
    end
  end
end
reap_leases()
reap_head()
announce(capacity)
return {gen, counted}

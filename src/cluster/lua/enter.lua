-- A permit at once if one is free and nobody waits, else a ticket at the back of the queue,
-- else (max_queue already wait) a refusal. ARGV[5] ticket, ARGV[6] capacity, ARGV[7] max_queue.
-- Returns {generation, 0 (permit) | -1 (full) | position, arrival number, 1 when a permit is
-- free for this position already (its instance should ask at once)}.
local ticket, capacity, max_queue = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local gen, settling = generation()
reap_leases()
reap_head()
local waiting = redis.call('ZCARD', queue)
if not settling and waiting == 0 and redis.call('HLEN', leases) < capacity then
  redis.call('HSET', leases, ticket, me)
  return {gen, 0, 0, 0}
end
if waiting >= max_queue then
  return {gen, -1, 0, 0}
end
local seq = redis.call('INCR', P .. 'seq')
redis.call('ZADD', queue, seq, ticket)
redis.call('HSET', owners, ticket, me)
local free = capacity - redis.call('HLEN', leases)
return {gen, waiting + 1, seq, (not settling and waiting < free) and 1 or 0}

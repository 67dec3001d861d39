-- Grants permits to this instance's waiters, ARGV[6..] in their order of arrival, as long as
-- each is among the first `free` of the whole queue. ARGV[5] capacity.
-- Returns {generation, granted tickets, tickets no longer in the queue}.
local capacity = tonumber(ARGV[5])
local gen, settling = generation()
reap_leases()
reap_head()
local granted, gone = {}, {}
for i = 6, #ARGV do
  local ticket = ARGV[i]
  local rank = redis.call('ZRANK', queue, ticket)
  if not rank then
    gone[#gone + 1] = ticket
  elseif not settling and rank < capacity - redis.call('HLEN', leases) then
    redis.call('ZREM', queue, ticket)
    redis.call('HDEL', owners, ticket)
    redis.call('HSET', leases, ticket, me)
    granted[#granted + 1] = ticket
  else
    break
  end
end
return {gen, granted, gone}

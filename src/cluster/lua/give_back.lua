-- Gives back permits and leaves the queue: ARGV[5] capacity, ARGV[6..] lease ids or tickets.
-- A freed place is announced to the instances first in line. Returns 1 when this instance's
-- own waiters are first in line (it grants at once), else 0.
local capacity = tonumber(ARGV[5])
local found = 0
for i = 6, #ARGV do
  found = found + redis.call('HDEL', leases, ARGV[i])
  if redis.call('ZREM', queue, ARGV[i]) == 1 then
    redis.call('HDEL', owners, ARGV[i])
    found = found + 1
  end
end
if found == 0 then
  return 0
end
reap_head()
if announce(capacity) then
  return 1
end
return 0

-- Gives back permits and leaves the queue: ARGV[5..] are lease ids or tickets. A freed place
-- is announced on the wake channel when someone waits. Returns how many were found.
local found = 0
for i = 5, #ARGV do
  found = found + redis.call('HDEL', leases, ARGV[i])
  if redis.call('ZREM', queue, ARGV[i]) == 1 then
    redis.call('HDEL', owners, ARGV[i])
    found = found + 1
  end
end
if found > 0 and redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', P .. 'wake', '')
end
return found

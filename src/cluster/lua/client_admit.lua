-- Per-client limits over every instance: ARGV[5] the client's key base, ARGV[6] a slot id,
-- ARGV[7] most answers open at once (0: no limit), ARGV[8] answers per second on average and
-- ARGV[9] the bucket's size (0: no rate).
--   <base>:open  HASH  slot id -> instance: the client's open answers (a dead instance's go)
--   <base>:rate  HASH  tokens, at: the client's token bucket
-- Returns {'ok', 0}, {'concurrency', 0} or {'rate', milliseconds until a token}.
local base, slot = ARGV[5], ARGV[6]
local max_open, per_second, burst = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local open_key, rate_key = base .. ':open', base .. ':rate'
if max_open > 0 then
  reap(open_key)
  if redis.call('HLEN', open_key) >= max_open then
    return {'concurrency', 0}
  end
end
if per_second > 0 then
  local now = now_ms()
  local state = redis.call('HMGET', rate_key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * per_second)
  if tokens < 1 then
    return {'rate', math.ceil((1 - tokens) / per_second * 1000)}
  end
  redis.call('HSET', rate_key, 'tokens', tostring(tokens - 1), 'at', now)
  redis.call('PEXPIRE', rate_key, math.ceil(burst / per_second * 1000) + 1000)
end
if max_open > 0 then
  redis.call('HSET', open_key, slot, me)
  -- Answers end long before this; it only bounds what a vanished client leaves behind.
  redis.call('PEXPIRE', open_key, 86400000)
end
return {'ok', 0}

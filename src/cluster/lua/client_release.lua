-- Ends open answers of clients: ARGV[5..] are pairs of a client's key base and a slot id.
for i = 5, #ARGV - 1, 2 do
  redis.call('HDEL', ARGV[i] .. ':open', ARGV[i + 1])
end
return 0

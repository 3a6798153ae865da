-- A node says it is alive, and learns which nodes are.
-- KEYS[1]: the nodes (a sorted set: node -> the Redis time of its last beat, in ms).
-- ARGV: the node ('' to only ask), the expiry in ms.
-- Answers {was_dead, alive}: was_dead is 1 if the node's previous beat is older than the
-- expiry (the others may have counted it dead); alive lists the nodes that beat within it.
-- Redis's clock, not the nodes': one clock for every node, however theirs drift.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, expiry = ARGV[1], tonumber(ARGV[2])
local was_dead = 0
if node ~= '' then
  local before = redis.call('ZSCORE', KEYS[1], node)
  if before and now - tonumber(before) > expiry then
    was_dead = 1
  end
  redis.call('ZADD', KEYS[1], now, node)
  -- Nodes dead for a hundred expiries are forgotten.
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 100 * expiry)
end
return {was_dead, redis.call('ZRANGEBYSCORE', KEYS[1], now - expiry, '+inf')}

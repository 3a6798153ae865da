-- Reads one stream's keys at one instant: its version token, then each value asked for.
-- KEYS[1]: the version. Each further key KEYS[i] comes with four arguments from
-- ARGV[4(i-2)+1]: the op (get, hget, hgetall or xrange) and its arguments (hget: the field;
-- xrange: start, end, count). Answers one reply per key, in order.
-- One script instead of MULTI/EXEC: a transaction holds the node's one shared connection
-- until EXEC answers, while a script is one command among the others pipelined on it.
local out = {redis.call('GET', KEYS[1])}
for i = 2, #KEYS do
  local at = 4 * (i - 2)
  local op, a, b, c = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  if op == 'get' then
    out[i] = redis.call('GET', KEYS[i])
  elseif op == 'hget' then
    out[i] = redis.call('HGET', KEYS[i], a)
  elseif op == 'hgetall' then
    out[i] = redis.call('HGETALL', KEYS[i])
  elseif op == 'xrange' then
    out[i] = redis.call('XRANGE', KEYS[i], a, b, 'COUNT', c)
  else
    return redis.error_reply('unknown read op ' .. op)
  end
end
return out

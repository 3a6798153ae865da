-- A client showed up through a node: the node takes over that client's runs in one session.
-- KEYS[1]: the session's runs (a hash: run id -> "<node>\n<client id>").
-- ARGV: the node, the client id. Answers the runs taken over, as run id, then the node that
-- owned it, for each.
local node, client = ARGV[1], ARGV[2]
local claimed = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local value = all[i + 1]
  local at = string.find(value, '\n', 1, true)
  if at and string.sub(value, at + 1) == client and string.sub(value, 1, at - 1) ~= node then
    redis.call('HSET', KEYS[1], all[i], node .. '\n' .. client)
    claimed[#claimed + 1] = all[i]
    claimed[#claimed + 1] = string.sub(value, 1, at - 1)
  end
end
return claimed

-- Records one presence change of a member connected through one node, and tells the others.
-- KEYS[1]: the session's members (a hash: member field -> "<node>\n<member JSON>").
-- ARGV: op ('set' or 'del'), the member's field, the node, the member's JSON (for 'set'),
-- the channel, and the message to publish there ('' to tell no one).
-- A 'del' removes the member only while the node still holds it (the member may have
-- reconnected through another node since); it answers 1 if it removed, 0 if not.
local op, field, node = ARGV[1], ARGV[2], ARGV[3]
if op == 'set' then
  redis.call('HSET', KEYS[1], field, node .. '\n' .. ARGV[4])
elseif op == 'del' then
  local held = redis.call('HGET', KEYS[1], field)
  if not held or string.sub(held, 1, #node + 1) ~= node .. '\n' then
    return 0
  end
  redis.call('HDEL', KEYS[1], field)
else
  return redis.error_reply('unknown presence op ' .. op)
end
if ARGV[6] ~= '' then
  -- As in the commit script: without the right to publish, the change still counts.
  redis.pcall('PUBLISH', ARGV[5], ARGV[6])
end
return 1

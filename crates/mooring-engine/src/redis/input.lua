-- Agent dispatch across nodes: who holds one user input.
-- KEYS[1]: the input's claim, next to its session's keys: 'held <node>' while a node offers
-- it to its workers, 'started <node>' once a run answering it is being written.
-- ARGV: op ('claim', 'start', 'release' or 'peek'), this node, the claim's lifetime in ms, then
-- the nodes the caller found dead, whose claims count for nothing (liveness is read by the
-- caller: the nodes' set is in another slot, and a node it does not know of may be new).
-- Answers {verdict, node}: 'ok', 'held' (by another live node) or 'started' (a run answers it);
-- 'peek' answers the claim as it is ('free', 'held' or 'started', and the node).
local op, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
local state, holder
if current then
  state, holder = string.match(current, '^(%a+) (.*)$')
end
local function dead(node)
  for i = 4, #ARGV do
    if ARGV[i] == node then return true end
  end
  return false
end
if op == 'peek' then
  if not state then return {'free', ''} end
  return {state, holder}
end
if op == 'release' then
  if state == 'held' and holder == me then redis.call('DEL', KEYS[1]) end
  return {'ok', me}
end
if op ~= 'claim' and op ~= 'start' then
  return redis.error_reply('unknown input op ' .. op)
end
if state == 'started' then
  -- Another run answering an answered input (a retry) is for the nodes' own tables to judge.
  if op == 'start' then return {'ok', holder} end
  return {'started', holder}
end
if state == 'held' and holder ~= me and not dead(holder) then
  return {'held', holder}
end
local mark = 'held'
if op == 'start' then mark = 'started' end
redis.call('SET', KEYS[1], mark .. ' ' .. me, 'PX', ttl)
return {'ok', me}

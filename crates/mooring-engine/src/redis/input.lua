-- Agent dispatch across nodes: who holds one user input.
-- KEYS[1]: the input's claim, next to its session's keys: 'held <node>' while a node offers
-- it to its workers, 'started <node> <client>' once a run of that client answers it.
-- ARGV: op ('claim', 'start', 'restore', 'release' or 'peek'), this node, the claim's lifetime
-- in ms, the client ('start', 'restore'), the claim before a start ('restore'), then the nodes
-- the caller found dead, whose 'held' claims count for nothing (liveness is read by the caller:
-- the nodes' set is in another slot, and a node the caller does not know of may be new).
-- Answers {verdict, detail}: 'ok' or 'free' (nobody holds it), 'held' (another node holds it;
-- detail: the node) or 'started' (a run answers it; detail: the node it came through). A
-- 'start' that succeeds answers the claim before it, for 'restore' to put back if the run is
-- refused after all.
local op, me, ttl, client, before = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local current = redis.call('GET', KEYS[1])
local state, holder, starter
if current then
  state, holder, starter = string.match(current, '^(%a+) (%S+) ?(.*)$')
end
local function dead(node)
  for i = 6, #ARGV do
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
  return {'ok', ''}
end
if op == 'restore' then
  if current == 'started ' .. me .. ' ' .. client then
    if before == '' then
      redis.call('DEL', KEYS[1])
    else
      redis.call('SET', KEYS[1], before, 'PX', ttl)
    end
  end
  return {'ok', ''}
end
if op ~= 'claim' and op ~= 'start' then
  return redis.error_reply('unknown input op ' .. op)
end
if state == 'started' then
  -- The agent that answers it may start again (a resend, or another run of its own).
  if op == 'start' and starter == client then return {'ok', current} end
  return {'started', holder}
end
if state == 'held' and holder ~= me and not dead(holder) then
  return {'held', holder}
end
if op == 'claim' then
  redis.call('SET', KEYS[1], 'held ' .. me, 'PX', ttl)
  return {'ok', ''}
end
redis.call('SET', KEYS[1], 'started ' .. me .. ' ' .. client, 'PX', ttl)
return {'ok', current or ''}

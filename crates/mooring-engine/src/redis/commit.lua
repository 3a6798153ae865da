#!lua
-- Applies one operation's writes if no stream it read has changed since (compare-and-set).
--
-- KEYS[1..n]: the version keys of the streams the operation read; then every key the writes use.
-- ARGV[1] = n; ARGV[2..n+1]: the versions those reads saw ('' for an absent stream);
-- ARGV[n+2]: this commit's token; then the writes, four arguments each: op, key index, a, b.
-- The last writes are 'pub' (key index 0, a = channel, b = message): wake-ups for other nodes,
-- published only once everything else is written, so a node woken by one reads the write.
-- A version is '<life>/<token>,<token>,...': the life changes only when the stream's records
-- are replaced (created, cleared, removed); the tokens are its last commits, newest first.
-- Returns 1 when applied, 2 when this very commit was applied before (a resent command), and
-- 0 when a stream changed: nothing is written then.
--
-- Nothing below can fail after the first write unless Redis itself does: the operation was
-- validated in Rust, and record ids only ever grow past the stream's tail.
local n = tonumber(ARGV[1])
local token = ARGV[n + 2]
local known = {
  set = true, del = true, xadd = true, xtrim = true, hset = true, hdel = true, sadd = true,
  srem = true, ver = true, pub = true,
}
for i = n + 3, #ARGV, 4 do
  if not known[ARGV[i]] then return redis.error_reply('unknown commit op ' .. ARGV[i]) end
end
local changed = false
local ours = false
for i = 1, n do
  local seen = redis.call('GET', KEYS[i]) or ''
  if seen ~= ARGV[1 + i] then
    changed = true
    local recent = seen:match('/(.*)$')
    if recent and (',' .. recent .. ','):find(',' .. token .. ',', 1, true) then ours = true end
  end
end
if changed then
  if ours then return 2 end
  return 0
end
local i = n + 3
while i <= #ARGV do
  local op, key, a, b = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'set' then
    redis.call('SET', key, a)
  elseif op == 'del' then
    redis.call('DEL', key)
  elseif op == 'xadd' then
    redis.call('XADD', key, a, 'r', b)
  elseif op == 'xtrim' then
    -- Retention: the entries before id a go.
    redis.call('XTRIM', key, 'MINID', a)
  elseif op == 'hset' then
    redis.call('HSET', key, a, b)
  elseif op == 'hdel' then
    redis.call('HDEL', key, a)
  elseif op == 'sadd' then
    redis.call('SADD', key, a)
  elseif op == 'srem' then
    redis.call('SREM', key, a)
  elseif op == 'ver' then
    -- The version follows the state: b while the stream exists, absent once it is gone.
    if redis.call('EXISTS', KEYS[tonumber(a)]) == 1 then
      redis.call('SET', key, b)
    else
      redis.call('DEL', key)
    end
  elseif op == 'pub' then
    -- A wake-up is best effort: the writes above are applied (a script is not rolled back),
    -- so a refused publish (an ACL without the channel) must not turn them into an error.
    redis.pcall('PUBLISH', a, b)
  end
  i = i + 4
end
return 1

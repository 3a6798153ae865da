#!lua
-- Writes and removes KEYS[1] at once: nothing stays, but the write reaches the replicas, so a
-- WAIT sent after this script on the same connection covers everything the primary held when
-- it ran (WAIT counts the replication offset of its connection's last write).
redis.call('SET', KEYS[1], '1')
redis.call('DEL', KEYS[1])
return 1

-- Creates a user atomically: the username is claimed and the record written together, or
-- neither. All user keys share the {users} hash tag, so this runs unchanged on Redis Cluster.
-- KEYS: 1 username -> id, 2 the user's record, 3 the set of every user id
-- ARGV: 1 id, 2 username, 3 password hash, 4 disabled (0/1), 5 created (ms)
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('HSET', KEYS[2], 'name', ARGV[2], 'hash', ARGV[3], 'disabled', ARGV[4], 'created', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1])
return 1

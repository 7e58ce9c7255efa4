"""The server-side code of mas: one Redis function library, loaded by the control plane only.

Sidecars need a few atomic multi-command steps on the server (appending a batch to a stream and
reading its length, the replay guard's check, the shared rate-limit bucket, the state's
compare-and-set). They run as the functions of the library ``mas``, which the control plane —
the operator, ``mas up``, the benchmark and test harnesses — loads with its administrative user
(``FUNCTION LOAD REPLACE``, on every primary of a cluster). A sidecar's Redis user may only call
them (``FCALL``): it can neither load code (``SCRIPT LOAD``, ``EVAL``, ``EVALSHA``,
``FUNCTION``) nor run any of its own, so no agent can make the server run an endless script.
A function lends its caller no rights: every command it runs is checked against the caller's
ACL, as if the caller had sent it.

The library carries its version (a digest of its code), which a sidecar checks at start-up
(``FCALL mas_version 0``) and waits for while it is missing or another one (the server was
replaced and not yet provisioned, or the control plane runs another release).

Functions (KEYS; ARGV):

* ``mas_append`` (the stream; ``"1"`` to answer its length, then per entry its field/value pair
  count, an approximate ``MAXLEN`` or 0, and the pairs): append each entry with a new id.
* ``mas_seen_check`` (seen, seen-by-time; five per entry: message id, entry id, entry ms,
  forget-after ms, ``"1"`` to record): per entry, the entry id recorded for its message before,
  or false (see :mod:`mas_sidecar.replay`).
* ``mas_seen_requeue`` (inbox, dead letters, seen, seen-by-time; message id, dead letter id,
  window ms, the entry's pairs): append a replayed dead letter as the entry of record.
* ``mas_bucket_take`` (the bucket; rate, burst): take a token from a shared token bucket with
  the server's clock; the seconds to wait, as text ("0" when granted).
* ``mas_state_cas`` (the state hash; the expected revision or "", the document): write if the
  revision matches; ``{1, new revision}`` or ``{0, current revision}``.
* ``mas_version`` (none): the library's version.

Used by the control plane (:func:`ensure_functions`) and the sidecar (the names and the
version).
"""

from __future__ import annotations

import hashlib

import redis

LIBRARY_NAME = "mas"
TRIM_PER_CALL = 100  # records the replay guard forgets per call, at most

_BODY = f"""
local function append(keys, args)
  local i = 2
  while i <= #args do
    local last = i + 1 + 2 * tonumber(args[i])
    if args[i + 1] ~= '0' then
      redis.call('XADD', keys[1], 'MAXLEN', '~', args[i + 1], '*', unpack(args, i + 2, last))
    else
      redis.call('XADD', keys[1], '*', unpack(args, i + 2, last))
    end
    i = last + 1
  end
  if args[1] == '1' then
    return redis.call('XLEN', keys[1])
  end
  return 0
end

local function seen_check(keys, args)
  local out = {{}}
  for i = 1, #args, 5 do
    local known = redis.call('HGET', keys[1], args[i])
    if known then
      out[#out + 1] = known
    else
      if args[i + 4] == '1' then
        local old = redis.call('ZRANGEBYSCORE', keys[2], '-inf', '(' .. args[i + 2], 'LIMIT', 0,
                               {TRIM_PER_CALL})
        if #old > 0 then
          redis.call('HDEL', keys[1], unpack(old))
          redis.call('ZREM', keys[2], unpack(old))
        end
        redis.call('HSET', keys[1], args[i], args[i + 1])
        redis.call('ZADD', keys[2], args[i + 3], args[i])
      end
      out[#out + 1] = false
    end
  end
  return out
end

local function seen_requeue(keys, args)
  local id = redis.call('XADD', keys[1], '*', unpack(args, 4))
  redis.call('XDEL', keys[2], args[2])
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('HSET', keys[3], args[1], id)
  redis.call('ZADD', keys[4], string.format('%d', ms + tonumber(args[3])), args[1])
  return id
end

local function bucket_take(keys, args)
  local rate, burst = tonumber(args[1]), tonumber(args[2])
  local now = redis.call('TIME')
  local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
  local state = redis.call('HMGET', keys[1], 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or t
  tokens = math.min(burst, tokens + math.max(0, t - at) * rate)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
  redis.call('HSET', keys[1], 'tokens', tostring(tokens), 'at', tostring(t))
  redis.call('PEXPIRE', keys[1], math.ceil(burst / rate * 1000) + 1000)
  return tostring(wait)
end

local function state_cas(keys, args)
  local rev = tonumber(redis.call('HGET', keys[1], 'rev') or '0')
  if args[1] ~= '' and tonumber(args[1]) ~= rev then
    return {{0, rev}}
  end
  redis.call('HSET', keys[1], 'doc', args[2], 'rev', rev + 1)
  return {{1, rev + 1}}
end

redis.register_function('mas_append', append)
redis.register_function('mas_seen_check', seen_check)
redis.register_function('mas_seen_requeue', seen_requeue)
redis.register_function('mas_bucket_take', bucket_take)
redis.register_function('mas_state_cas', state_cas)
"""

VERSION = hashlib.sha256(_BODY.encode()).hexdigest()[:16]
LIBRARY = f"""#!lua name={LIBRARY_NAME}
{_BODY}
redis.register_function{{
  function_name = 'mas_version',
  callback = function() return '{VERSION}' end,
  flags = {{'no-writes'}},
}}
"""


def ensure_functions(client: redis.Redis | redis.RedisCluster) -> bool:
    """Load the library with an administrative client unless the server has this version (on
    a cluster: on every primary); whether it loaded. Call it before sidecars start and whenever
    the server may have lost it."""
    try:
        if client.fcall("mas_version", 0) == VERSION.encode():
            return False
    except redis.ResponseError:
        pass  # no such function yet
    client.function_load(LIBRARY, replace=True)
    return True

"""The server-side code of mas: one Redis function library, loaded by the control plane only.

Sidecars need a few atomic multi-command steps on the server (appending a batch to a sender's
stream with its discovery and reading its length, adopting new senders' streams, the replay
guard's check, the shared rate-limit bucket, the state's compare-and-set). They run as the
functions of the library ``mas``, which the control plane — the operator, ``mas up``, the
benchmark and test harnesses — loads with its administrative user (``FUNCTION LOAD REPLACE``,
on every primary of a cluster). A sidecar's Redis user may only call
them (``FCALL``): it can neither load code (``SCRIPT LOAD``, ``EVAL``, ``EVALSHA``,
``FUNCTION``) nor run any of its own, so no agent can make the server run an endless script.
A function lends its caller no rights: every command it runs is checked against the caller's
ACL, as if the caller had sent it.

The library carries its version (a digest of its code), which a sidecar checks at start-up
(``FCALL mas_version 0``) and waits for while it is missing or another one (the server was
replaced and not yet provisioned, or the control plane runs another release).

Functions (KEYS; ARGV):

* ``mas_append`` (the stream, and for a sender's stream to another agent also that agent's
  senders set and ring; options — ``l`` to answer the stream's length, ``x`` to append only to
  an existing stream —, the sender's id when the set is named, then per entry its field/value
  pair count, an approximate ``MAXLEN`` or 0, and the pairs): add the sender to the set and,
  when it was not there, append a content-free entry to the ring (whose failure is ignored:
  the ring only hastens discovery); append each entry with a new id; answer the length, or
  the number of entries appended.
* ``mas_adopt`` (the senders set, then each candidate sender's stream; ARGV: each candidate's
  id): per candidate, 1 after creating the consumer group on its stream (if missing), or 0
  after removing it from the set when its stream does not exist. Atomic, so a sender that
  adds itself and appends (one ``mas_append``) is never removed.
* ``mas_seen_check`` (seen, seen-by-time; five per entry: message id, its record — stream and
  entry id —, entry ms, forget-after ms, ``"1"`` to record): per entry, the record kept for its
  message before, or false (see :mod:`mas_sidecar.checks.replay`).
* ``mas_seen_receipt`` (seen, seen-by-time, the audit stream, the audit chain heads; the
  number of entries, five per entry as for ``mas_seen_check``, the chain head's field and value,
  the audit entry's pairs): ``mas_seen_check``, then, only when it accepts every entry (each
  unknown and fresh, or recorded for this same entry), append the audit entry and set the chain
  head, in the same call; ``{answers, 1}`` when appended, ``{answers, 0}`` otherwise.
* ``mas_seen_requeue`` (the sender's stream, dead letters, seen, seen-by-time, senders set;
  message id, dead letter id, window ms, the sender's id, the stream's name in records, the
  entry's pairs): append a replayed dead letter to its sender's stream as the entry of record
  (creating the stream's group and listing the sender if either is missing).
* ``mas_bucket_take`` (the bucket; rate, burst): take a token from a shared token bucket with
  the server's clock; the seconds to wait, as text ("0" when granted).
* ``mas_state_cas`` (the state hash; the expected revision or "", the document): write if the
  revision matches; ``{1, new revision}`` or ``{0, current revision}``.
* ``mas_version`` (none): the library's version.

Pure: the library's text and version. The control plane loads it
(:func:`mas_control.provision.ensure_functions`); the sidecar checks the version and calls the
functions by name.
"""

from __future__ import annotations

import hashlib

from mas_core.keys import CONSUMER_GROUP

LIBRARY_NAME = "mas"
TRIM_PER_CALL = 100  # records the replay guard forgets per call, at most
RING_MAXLEN = 1000  # about how many entries a ring keeps (entries are read and deleted at once)

_BODY = f"""
local function append(keys, args)
  local options, i = args[1], 2
  if #keys == 3 then
    if redis.call('SADD', keys[2], args[2]) == 1 then
      redis.pcall('XADD', keys[3], 'MAXLEN', '~', '{RING_MAXLEN}', '*', 'n', '1')
    end
    i = 3
  end
  local head = {{'XADD', keys[1]}}
  if string.find(options, 'x', 1, true) then head[#head + 1] = 'NOMKSTREAM' end
  local written = 0
  while i <= #args do
    local last = i + 1 + 2 * tonumber(args[i])
    local command = {{unpack(head)}}
    if args[i + 1] ~= '0' then
      command[#command + 1] = 'MAXLEN'
      command[#command + 1] = '~'
      command[#command + 1] = args[i + 1]
    end
    command[#command + 1] = '*'
    for j = i + 2, last do command[#command + 1] = args[j] end
    if redis.call(unpack(command)) then written = written + 1 end
    i = last + 1
  end
  if string.find(options, 'l', 1, true) then
    return redis.call('XLEN', keys[1])
  end
  return written
end

local function adopt(keys, args)
  local out = {{}}
  for i = 1, #args do
    if redis.call('EXISTS', keys[i + 1]) == 1 then
      redis.pcall('XGROUP', 'CREATE', keys[i + 1], '{CONSUMER_GROUP}', '0')
      out[i] = 1
    else
      redis.call('SREM', keys[1], args[i])
      out[i] = 0
    end
  end
  return out
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

local function seen_receipt(keys, args)
  local n = tonumber(args[1])
  local out = seen_check(keys, {{unpack(args, 2, 1 + 5 * n)}})
  for k = 1, n do
    local i = 2 + 5 * (k - 1)
    if out[k] then
      if out[k] ~= args[i + 1] then return {{out, 0}} end
    elseif args[i + 4] ~= '1' then
      return {{out, 0}}
    end
  end
  local at = 2 + 5 * n
  redis.call('XADD', keys[3], '*', unpack(args, at + 2))
  redis.call('HSET', keys[4], args[at], args[at + 1])
  return {{out, 1}}
end

local function seen_requeue(keys, args)
  redis.pcall('XGROUP', 'CREATE', keys[1], '{CONSUMER_GROUP}', '0', 'MKSTREAM')
  redis.call('SADD', keys[5], args[4])
  local id = redis.call('XADD', keys[1], '*', unpack(args, 6))
  redis.call('XDEL', keys[2], args[2])
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('HSET', keys[3], args[1], args[5] .. ' ' .. id)
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
redis.register_function('mas_adopt', adopt)
redis.register_function('mas_seen_check', seen_check)
redis.register_function('mas_seen_receipt', seen_receipt)
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

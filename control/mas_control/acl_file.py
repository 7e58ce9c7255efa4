"""The server's ACL file: how the agents' Redis users survive a server restart.

ACL users live in the server's memory; append-only persistence does not keep them. A server
started with an ACL file (``aclfile``) loads its users from that file, and ``ACL SAVE`` writes
them back. Two rules make that safe:

* With an ACL file the server ignores ``requirepass``: the ``default`` user is whatever the file
  says, and a file without one makes it passwordless. So before every start the ``default``
  user's line is written from the administrator password (:func:`acl_file_text`,
  :func:`prepare_acl_file`): the password in force is always the one the server was given, and
  changing it (a new Secret, a new ``mas up`` run) takes effect at the next start. The file
  holds the SHA-256 of each password, as the server keeps them, never a password.
* The file is the server's alone: mode 0600 in a directory only its user can enter (the server
  runs with umask 077, so ``ACL SAVE`` keeps it so).

The control plane (the operator, ``mas up``) calls :func:`save_acl_users` after it creates or
deletes users; a server without an ACL file (an external Redis) keeps its users in memory only,
and the control plane recreates them. Used by :mod:`mas_cli.local.redis_server` (``mas up``'s
embedded server and ``mas redis-server``), :mod:`mas_cli.local.supervisor` and the operator's
``redis_admin``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis

from mas_core.identity.credentials import write_atomic

ACL_FILE_NAME = "users.acl"
ACL_FILE_MODE = 0o600
_DEFAULT_USER = ("user", "default")
_NO_ACL_FILE = "not configured to use an ACL file"


def acl_file_text(current: str, password: str) -> str:
    """The ACL file ``current`` with its ``default`` user replaced by an administrator that
    accepts only ``password``; every other user stays as the server saved it."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    others = [
        line
        for line in current.splitlines()
        if line.strip() and tuple(line.split()[:2]) != _DEFAULT_USER
    ]
    return "\n".join([f"user default on #{digest} ~* &* +@all", *others]) + "\n"


def prepare_acl_file(path: Path, password: str) -> None:
    """Write ``path`` (mode 0600) for a server whose administrator password is ``password``,
    keeping the users an earlier run saved there."""
    current = path.read_text() if path.exists() else ""
    write_atomic(path, acl_file_text(current, password).encode(), ACL_FILE_MODE)


def save_acl_users(client: redis.Redis) -> bool:
    """``ACL SAVE``: True when the server wrote its users to its ACL file, False when it has
    none (or this user may not save), so the users live in its memory only."""
    try:
        client.execute_command("ACL", "SAVE")
    except redis.exceptions.NoPermissionError:
        return False
    except redis.ResponseError as exc:
        if _NO_ACL_FILE in str(exc):
            return False
        raise
    return True

"""Where ``mas up``'s embedded Valkey keeps its data between runs: ``<state>/redis``.

Unless ``mas up --ephemeral``, the embedded server writes an append-only file (every queued
message, agent state, audit trails) and an ACL file (the agents' users) there, so what a run
accepted is still there for the next run of the same folder. The directory is private: mode
0700, and it must belong to the user running ``mas up`` (one planted by someone else could
hold an ACL file granting them access, so it is refused). Agents never run as that user when
``mas up`` runs as root, so none can read it. One run at a time: a lock file held for the run
refuses a second ``mas up`` on the same directory (two servers on one append-only file would
corrupt it).

Used by :mod:`mas_cli.local.supervisor`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mas_cli.local.redis_server import RedisServerError
from mas_core.identity.credentials import private_directory

DATA_DIR_NAME = "redis"
LOCK_FILE_NAME = "mas-up.lock"


class RedisDataDir:
    """``<state_dir>/redis``, held by one run between :meth:`acquire` and :meth:`release`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DATA_DIR_NAME
        self._lock: int | None = None

    def acquire(self) -> Path:
        """Create (or check) the directory and take its lock; :class:`RedisServerError` when
        it belongs to another user or another run holds it."""
        if self.path.exists() and self.path.stat().st_uid != os.geteuid():
            raise RedisServerError(
                f"{self.path} belongs to uid {self.path.stat().st_uid}, not to this user: "
                "remove it, or run with --ephemeral or another --state-dir"
            )
        private_directory(self.path)
        lock = os.open(self.path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise RedisServerError(
                f"another mas up keeps its Redis data in {self.path}: stop it first, or run "
                "with --ephemeral or another --state-dir"
            ) from None
        self._lock = lock
        return self.path

    def release(self) -> None:
        """Let the next run have the directory (the data stays)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

"""Which operating-system user each process of ``mas up`` runs as.

Run as root, ``mas up`` gives every agent program and every sidecar an unprivileged user of its
own: agent number *i* (in manifest order, all its replicas) runs as uid and gid ``base + 2i``,
its sidecars as ``base + 2i + 1``, with no supplementary groups and umask 077. Those ids need no
``/etc/passwd`` entry, and ids that have one are refused (their owner's files would be the
agents'). The kernel then keeps an agent from reading its sidecar's credentials directory (mode
0700, owned by the sidecar's user), another agent's ``/proc/PID/environ`` (which holds that
agent's API token) and the processes of ``mas up`` itself (which holds the trust anchor's key
and the Redis administrator password in memory). Run as anyone else, ``mas up`` cannot switch
users: every process runs as the invoking user, and nothing is isolated from anything.

:func:`unreachable` tells, before anything starts, whether such a user can reach a file it
needs (the interpreter, the installed packages, the agent's folder): a checkout or a Python
under a home directory of mode 0700 is the usual obstacle, and then ``mas up`` runs everything
as root and says that nothing is isolated. Used by :mod:`mas_cli.local.supervisor` and
:mod:`mas_cli.local.processes`.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_UID_BASE = 60100
READ = os.R_OK
EXECUTE = os.X_OK


@dataclass(frozen=True)
class RunAs:
    """An unprivileged user (and its own group) a child process runs as."""

    uid: int
    gid: int

    @property
    def owner(self) -> tuple[int, int]:
        """``(uid, gid)``, for files written for this user."""
        return (self.uid, self.gid)


@dataclass(frozen=True)
class LocalUsers:
    """The users of one ``mas up`` run; ``base`` None: everything runs as the invoking user."""

    base: int | None

    @property
    def isolated(self) -> bool:
        return self.base is not None

    def agent(self, index: int) -> RunAs | None:
        """The user of agent number ``index``'s program (every replica of it)."""
        return None if self.base is None else RunAs(self.base + 2 * index, self.base + 2 * index)

    def sidecar(self, index: int) -> RunAs | None:
        """The user of agent number ``index``'s sidecars."""
        if self.base is None:
            return None
        uid = self.base + 2 * index + 1
        return RunAs(uid, uid)

    def taken(self, agents: int) -> list[str]:
        """The ids the first ``agents`` agents would use that belong to an existing user or
        group, one description each."""
        found = []
        for index in range(agents):
            for user in (self.agent(index), self.sidecar(index)):
                if user is None:
                    continue
                for kind, lookup, number in (
                    ("user", pwd.getpwuid, user.uid),
                    ("group", grp.getgrgid, user.gid),
                ):
                    try:
                        name = lookup(number)[0]
                    except KeyError:
                        continue
                    found.append(f"{kind} id {number} belongs to {name!r}")
        return found


def local_users(uid_base: int) -> LocalUsers:
    """Separate users from ``uid_base`` on when this process runs as root, else none."""
    return LocalUsers(uid_base if os.geteuid() == 0 else None)


def _allows(info: os.stat_result, user: RunAs, access: int) -> bool:
    """Whether ``info``'s permission bits give ``user`` (no supplementary groups) ``access``."""
    if info.st_uid == user.uid:
        bits = info.st_mode >> 6
    elif info.st_gid == user.gid:
        bits = info.st_mode >> 3
    else:
        bits = info.st_mode
    return bits & access == access


def unreachable(path: Path, user: RunAs, access: int) -> str | None:
    """Why ``user`` cannot get ``access`` (``READ`` and/or ``EXECUTE``) to ``path``, or None.

    Every directory on the way must let the user through (search permission), both along
    ``path`` as written and along the path its symbolic links lead to; ACLs are not consulted.
    """
    for candidate in dict.fromkeys((path.absolute(), path.resolve())):
        for directory in reversed(candidate.parents):
            try:
                info = directory.stat()
            except OSError as exc:
                return f"{directory}: {exc.strerror or exc}"
            if not _allows(info, user, EXECUTE):
                return f"{directory} ({stat.filemode(info.st_mode)}) cannot be entered"
        try:
            info = candidate.stat()
        except OSError as exc:
            return f"{candidate}: {exc.strerror or exc}"
        if not _allows(info, user, access):
            return f"{candidate} ({stat.filemode(info.st_mode)}) is not open to it"
    return None

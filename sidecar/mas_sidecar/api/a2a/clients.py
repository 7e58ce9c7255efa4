"""The external clients an exposed agent accepts, each with its bearer API key.

``spec.a2a.clients`` names them; each key reaches the sidecar as a file named after its client
in ``MAS_A2A_CLIENTS_DIR`` (on Kubernetes a projected volume of the clients' Secrets, under
``mas up`` a private directory it writes). :meth:`ClientKeys.authenticate` compares the bearer
token a call presents with every key, in a time that does not depend on which matched, and
says which client it is. Keys are never logged: only client names are.

Used by :mod:`mas_sidecar.api.a2a.server`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)
MIN_KEY_LENGTH = 16
_SCHEME = "bearer "


class ClientKeys:
    """The API key of each named client."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)

    @classmethod
    def load(cls, directory: Path | None, names: Sequence[str]) -> ClientKeys:
        """The keys of the clients ``names`` from ``directory``; a client whose file is
        missing or holds a key shorter than ``MIN_KEY_LENGTH`` is left out (and logged by
        name), so it cannot call."""
        keys: dict[str, bytes] = {}
        for name in names:
            path = directory / name if directory is not None else None
            try:
                key = path.read_bytes().strip() if path is not None else b""
            except OSError:
                key = b""
            if len(key) < MIN_KEY_LENGTH:
                log.warning("A2A client %s has no usable API key: it cannot call", name)
                continue
            keys[name] = key
        return cls(keys)

    def authenticate(self, authorization: str | None) -> str | None:
        """The client whose key ``authorization`` (the header) presents, or None."""
        if not authorization or authorization[: len(_SCHEME)].lower() != _SCHEME:
            return None
        presented = authorization[len(_SCHEME) :].strip().encode()
        found = None
        for name, key in self._keys.items():  # every key compared: no early exit
            if hmac.compare_digest(presented, key):
                found = name
        return found

"""The discovery registry's entry format.

An agent's entry in ``mas:{registry}:agents`` is JSON ``{capabilities, roles}``: what the
control plane vouches for (an external A2A agent's also ``external``: its endpoint URL, which
the senders' sidecars call), so only the control plane writes it — the operator when it
reconciles the ``Agent`` (so the agent is registered, and messages to it are accepted, before
its pods run), ``mas up`` before it starts the sidecars. Sidecars only read it: capabilities
decide what a sender may send to an agent, so an agent must never be able to claim one.
What an agent says about itself (its discovery metadata, as the DLP policy lets it out) lives in
a key of its own (``mas:{<agent>}:metadata``), and its sidecars renew its liveness lease.

Pure; the sidecar's registry reads entries with :func:`parse_entry`, the control plane writes
them (:func:`mas_control.provision.register_agent`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# An external agent's liveness lease: no sidecar of its own renews one, so the control plane
# writes a deadline that never comes (milliseconds, still exact as a Redis sorted-set score).
EXTERNAL_LEASE = 2**52


@dataclass(frozen=True)
class RegistryEntry:
    """What the control plane vouches for about one agent."""

    capabilities: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    external: str | None = None  # an ExternalAgent's A2A endpoint


def entry_document(
    capabilities: Sequence[str], roles: Sequence[str], external: str | None = None
) -> bytes:
    """The registry entry of an agent, as stored; ``external``: an external agent's endpoint."""
    document: dict[str, Any] = {"capabilities": list(capabilities), "roles": list(roles)}
    if external is not None:
        document["external"] = external
    return orjson.dumps(document)


def parse_entry(raw: bytes) -> RegistryEntry | None:
    """The entry stored as ``raw``; None when it is not one (it then grants nothing)."""
    try:
        document: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    lists = [document.get("capabilities", []), document.get("roles", [])]
    if not all(
        isinstance(items, list) and all(isinstance(i, str) for i in items) for items in lists
    ):
        return None
    external = document.get("external")
    if external is not None and not isinstance(external, str):
        return None
    return RegistryEntry(tuple(lists[0]), tuple(lists[1]), external)

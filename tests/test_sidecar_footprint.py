"""What a running sidecar has loaded before its first message, and that signing needs no OpenSSL.

A sidecar's resident memory is mostly the code it imports (see the cost per agent in
docs/benchmarks.md). Rather than bound memory, which depends on the machine, these tests start
real signed sidecars with a ``sitecustomize`` module on their path that refuses the modules a
sidecar must not need (the ``cryptography`` package: Ed25519 goes through PyNaCl alone) and, when
the sidecar exits, writes the names of every module it loaded. A sidecar that is ready, and then
one that signed a message its receiver verified, must not have loaded what is only needed later
or never: the DLP detectors and RE2 without a DLP policy, the OpenAPI document's generator
before anyone asked for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_attacks
from test_attacks import ALICE_ASKS_BOB, World
from test_layers import REFUSER

world = test_attacks.world  # the fixture: signed sidecars as their agents' own Redis users

MODULES_FILE = "FOOTPRINT_MODULES_FILE"
REFUSED = ("cryptography",)
# test_layers' finder that refuses REFUSED, then the list of modules written at exit.
SITECUSTOMIZE = (
    REFUSER.format(refused=REFUSED)
    + f"""
import atexit, os

_path = os.environ.get({MODULES_FILE!r})


@atexit.register
def _write_modules():
    if _path:
        with open(_path, "w") as handle:
            handle.write("\\n".join(sorted(sys.modules)))
"""
)
# Loaded only when a policy turns DLP on, when /v1/openapi.json is first asked for, on the first
# request to an external A2A agent, or never.
NOT_BEFORE_USE = (
    "cryptography",
    "re2",
    "mas_sidecar.checks.dlp.detectors",
    "mas_sidecar.checks.dlp.scanner",
    "mas_sidecar.api.openapi",
    "mas_sidecar.api.a2a.remote",
    "mas_sidecar.api.a2a.outbound",
)


@pytest.fixture
def footprint(tmp_path: Path) -> Path:
    """A directory holding the ``sitecustomize`` module above."""
    directory = tmp_path / "footprint"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def loaded(path: Path) -> set[str]:
    return set(path.read_text().split("\n"))


def started(world: World, agent_id: str, footprint: Path, tmp_path: Path) -> Path:
    """Start a signed sidecar for ``agent_id`` under ``footprint``; where it will list its
    modules when it stops."""
    modules = tmp_path / f"{agent_id.replace('/', '_')}.modules"
    world.start(agent_id, PYTHONPATH=str(footprint), **{MODULES_FILE: str(modules)})
    return modules


def stop_all(world: World) -> None:
    for sidecar in world.sidecars.started:
        assert sidecar.stop() == 0


async def test_a_ready_sidecar_has_loaded_nothing_it_needs_only_later(
    world: World, footprint: Path, tmp_path: Path
) -> None:
    world.policy(**ALICE_ASKS_BOB)  # signing required, no DLP
    modules = started(world, "default/alice", footprint, tmp_path)
    stop_all(world)

    names = loaded(modules)
    assert "mas_sidecar.main" in names and "nacl.signing" in names  # it ran, and can sign
    assert not [name for name in names if name.startswith(NOT_BEFORE_USE)]


async def test_signed_messages_go_through_sidecars_that_cannot_import_cryptography(
    world: World, footprint: Path, tmp_path: Path
) -> None:
    world.policy(**ALICE_ASKS_BOB)
    modules = [
        started(world, agent, footprint, tmp_path) for agent in ("default/alice", "default/bob")
    ]
    alice, bob = world.apis["default/alice"], world.apis["default/bob"]

    await alice.send("bob", "question", {"n": 1})
    delivered = await bob.collect(1)
    stop_all(world)

    assert [event["payload"] for event in delivered] == [{"n": 1}]
    for path in modules:
        assert not [name for name in loaded(path) if name.startswith(("cryptography", "re2"))]

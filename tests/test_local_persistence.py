"""``mas up`` keeps its embedded Valkey's data in the folder's state directory across runs.

Real runs of ``mas up`` on a folder of two agents: a ``sender`` that sends one note when the
folder holds a ``send`` file, and a ``receiver`` that does not take deliveries while the folder
holds a ``hold`` file, and otherwise prints each note and counts them in its persisted state. A
note accepted in one run and not yet delivered is delivered by the next run; ``--ephemeral``
starts empty and leaves the kept data alone; the kept files are private; a second run on the
same state directory is refused while the first one runs.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from test_local_mode import MasUp, assert_no_survivors

from mas_cli.local.users import DEFAULT_UID_BASE, READ, RunAs, unreachable
from mas_core.acl import DASHBOARD_USER, acl_username

SENDER = """
import asyncio
from pathlib import Path

from mas import SidecarClient


async def main() -> None:
    marker = Path("send")
    if marker.exists():
        async with SidecarClient() as client:
            message_id = await client.send("receiver", "note", {"text": marker.read_text()})
        print(f"sent as {message_id}", flush=True)


asyncio.run(main())
"""

RECEIVER = """
import sys
from pathlib import Path

from pydantic import BaseModel

from mas import Agent, AgentMessage


class Count(BaseModel):
    received: int = 0


class Note(BaseModel):
    text: str


class Receiver(Agent[Count]):
    def __init__(self) -> None:
        super().__init__(state_model=Count)

    async def on_start(self) -> None:
        print(f"received so far: {self.state.received}", flush=True)

    @Agent.on("note", model=Note)
    async def note(self, message: AgentMessage, payload: Note) -> None:
        await self.update_state({"received": self.state.received + 1})
        print(f"got {payload.text}", flush=True)


if Path("hold").exists():
    print("holding", flush=True)
    sys.exit(0)
Receiver().run()
"""

MANIFESTS = [
    {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"local": {"command": ["python", f"{name}.py"]}},
    }
    for name in ("sender", "receiver")
] + [
    {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "GatewayPolicy",
        "metadata": {"name": "notes"},
        "spec": {
            "rules": [
                {"name": "notes", "action": "allow", "from": {"agents": ["sender"]},
                 "to": {"agents": ["receiver"]}, "types": ["note"]}
            ]
        },
    }
]  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    directory = tmp_path / "agents"
    directory.mkdir()
    (directory / "sender.py").write_text(SENDER)
    (directory / "receiver.py").write_text(RECEIVER)
    (directory / "agents.yaml").write_text("\n---\n".join(json.dumps(m) for m in MANIFESTS))
    return directory


def run_until(folder: Path, cwd: Path, *patterns: str, args: tuple[str, ...] = ()) -> str:
    """``mas up`` on ``folder`` from ``cwd``, stopped (SIGINT) once each pattern showed; the
    output."""
    with MasUp(str(folder), *args, cwd=cwd) as up:
        for pattern in patterns:
            up.wait_for(pattern, timeout=60)
        status, output = up.interrupt()
    assert status == 0, output
    assert_no_survivors(output)
    return output


def kept_files(state: Path) -> dict[str, bytes]:
    """What the embedded server keeps in ``state``: its files and their bytes."""
    redis_dir = state / "redis"
    return {
        str(path.relative_to(redis_dir)): path.read_bytes()
        for path in sorted(redis_dir.rglob("*"))
        if path.is_file() and path.name != "mas-up.lock"
    }


def test_a_note_accepted_before_a_stop_is_delivered_by_the_next_run_and_ephemeral_starts_empty(
    folder: Path, tmp_path: Path
) -> None:
    (folder / "hold").write_text("")
    (folder / "send").write_text("accepted before the stop")
    first = run_until(folder, tmp_path, r"^sender\[0\] +\| sent as ", r"^receiver\[0\] \| holding")
    assert f"redis data kept in {tmp_path / '.mas' / 'redis'}" in first

    (folder / "hold").unlink()
    (folder / "send").unlink()
    second = run_until(folder, tmp_path, r"^receiver\[0\] \| got accepted before the stop")
    assert "receiver[0] | received so far: 0" in second
    for agent in ("sender", "receiver"):  # trails of two runs, checkpointed by both anchors
        assert re.search(
            rf"audit trail of default/{agent}: \d+ entries in \d+ chain\(s\), intact", second
        )

    before = kept_files(tmp_path / ".mas")
    ephemeral = run_until(
        folder, tmp_path, r"^receiver\[0\] \| received so far: ", args=("--ephemeral",)
    )
    assert "redis data is temporary (--ephemeral): nothing is kept" in ephemeral
    assert "receiver[0] | received so far: 0" in ephemeral  # the state kept by now is 1
    assert "receiver[0] | got" not in ephemeral
    assert kept_files(tmp_path / ".mas") == before


def test_the_kept_data_is_private_and_holds_only_the_users_of_the_folders_agents(
    folder: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    planted = state / "redis" / "users.acl"
    planted.parent.mkdir(parents=True)
    planted.parent.chmod(0o755)
    # A user an earlier run made for an agent that is no longer in the folder.
    planted.write_text(f"user {acl_username('default/gone')} on >x ~* +@all\n")
    run_until(
        folder, tmp_path, r"^receiver\[0\] \| received so far: ", args=("--state-dir", str(state))
    )

    redis_dir = state / "redis"
    assert stat.S_IMODE(redis_dir.stat().st_mode) == 0o700
    files = [path for path in redis_dir.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"users.acl", "mas-up.lock"}
    assert any(path.parent.name == "appendonlydir" for path in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    agent = RunAs(DEFAULT_UID_BASE, DEFAULT_UID_BASE)  # a user mas up runs an agent as
    assert unreachable(redis_dir / "users.acl", agent, READ) is not None
    users = [line.split()[1] for line in (redis_dir / "users.acl").read_text().splitlines()]
    # and the read-only dashboard's user (its password new each run, as the agents')
    assert sorted(users) == sorted(
        [
            "default",
            acl_username("default/sender"),
            acl_username("default/receiver"),
            DASHBOARD_USER,
        ]
    )


def test_a_second_run_on_the_same_state_directory_is_refused(folder: Path, tmp_path: Path) -> None:
    with MasUp(str(folder), cwd=tmp_path) as first:
        first.wait_for(r"^receiver\[0\] \| received so far: ", timeout=60)
        with MasUp(str(folder), cwd=tmp_path) as second:
            status, output = second.finish()
        assert status == 1, output
        assert f"another mas up keeps its Redis data in {tmp_path / '.mas' / 'redis'}" in output
        status, output = first.interrupt()
    assert status == 0, output

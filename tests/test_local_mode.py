"""Local mode and the ``mas`` command.

First the pure parts (which processes run with which settings, restart back-off, counters, the
summary table), then ``mas up`` end to end as a subprocess (the quickstart exchanging messages,
a stop on SIGINT, crash restarts), checking that no child process outlives it, then the
``mas dead-letters`` commands against a real sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import Sidecars

from mas_cli.local.display import ReplicaRow, format_table
from mas_cli.local.issuer import LocalIdentity
from mas_cli.local.metrics import MessageCounts, message_counts
from mas_cli.local.plan import agent_command, plan_replicas
from mas_cli.local.processes import SidecarProcess
from mas_cli.local.redis_server import (
    LISTEN_PORTS_FROM,
    ephemeral_low,
    free_port,
    listen_ports,
)
from mas_cli.local.restarts import Restarts
from mas_cli.local.supervisor import SIDECAR_READY_TIMEOUT, describe_exit, ready_timeout
from mas_cli.local.users import EXECUTE, READ, LocalUsers, RunAs, unreachable
from mas_cli.main import main
from mas_core.acl import masked_url
from mas_core.identity.credentials import load_agent_credentials
from mas_core.manifests import parse_agent

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart"
MAS = [sys.executable, "-c", "import sys; from mas_cli.main import main; sys.exit(main())"]


def manifest(name: str, command: list[str], **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {**spec, "local": {"command": command}},
    }


# Pure parts


def test_plan_gives_each_replica_its_sidecar_and_agent_env(tmp_path: Path) -> None:
    agent = parse_agent(
        manifest(
            "worker",
            ["python", "worker.py", "--fast"],
            capabilities=["work", "sum"],
            roles=["staff"],
            replicas=2,
            env=[{"name": "GREETING", "value": "hi"}, {"name": "MAS_AGENT_ID", "value": "x"}],
            delivery={"maxAttempts": 3, "leaseSeconds": 7},
        ),
        "test",
    )
    other = parse_agent(manifest("other", ["./run.sh"]), "test")
    plans = plan_replicas([agent, other], tmp_path, itertools.count(41000))

    assert [(p.label, p.port, p.output_prefix) for p in plans] == [
        ("default/worker-0", 41000, "worker[0]"),
        ("default/worker-1", 41001, "worker[1]"),
        ("default/other-0", 41002, "other[0]"),
    ]
    second = plans[1]
    assert second.sidecar_env == {
        "MAS_REPLICA_ID": "worker-1",
        "MAS_CAPABILITIES": "work,sum",
        "MAS_ROLES": "staff",
        "MAS_MAX_ATTEMPTS": "3",
        "MAS_LEASE_MS": "7000",
    }
    assert second.agent_env == {
        "PYTHONUNBUFFERED": "1",
        "GREETING": "hi",
        "MAS_SIDECAR_URL": "http://127.0.0.1:41001",
        "MAS_AGENT_ID": "default/worker",
    }
    assert second.command == [sys.executable, "worker.py", "--fast"]
    assert second.cwd == tmp_path
    assert second.log_file_name() == "default_worker-1.sidecar.log"
    assert plans[2].command == ["./run.sh"]
    assert plans[2].sidecar_env["MAS_CAPABILITIES"] == ""


def test_the_anchor_stays_in_memory_and_the_next_run_trusts_its_public_key(
    tmp_path: Path,
) -> None:
    agents = [parse_agent(manifest("worker", ["x"]), "test")]
    state = tmp_path / "state"
    legacy = state / "identity" / "anchor"  # where earlier versions kept the anchor's key
    legacy.mkdir(parents=True)
    (legacy / "anchor.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    first = LocalIdentity(tmp_path / "run-1", state, agents, {"default/worker": None})
    assert first.issue_all()  # the earlier private keys are removed
    second = LocalIdentity(tmp_path / "run-2", state, agents, {"default/worker": None})
    assert not second.issue_all()

    earlier = load_agent_credentials(first.credentials_dir("default/worker"))
    now = load_agent_credentials(second.credentials_dir("default/worker"))
    assert now.claims.kid != earlier.claims.kid  # a new anchor for every run
    assert set(now.trusted_kids) == {now.claims.kid, earlier.claims.kid}
    assert not (state / "identity").exists()
    assert sorted(p.name for p in state.iterdir()) == ["anchor.pub", "anchors"]  # public keys
    assert b"PRIVATE KEY" not in (state / "anchor.pub").read_bytes()
    # every run's anchor signed the audit checkpoints of its run: verification trusts them all
    assert set(second.audit_trust()) == {now.claims.kid, earlier.claims.kid}
    assert sorted(p.stem for p in (state / "anchors").iterdir()) == sorted(second.audit_trust())


def test_users_of_their_own_are_checked_for_what_they_can_reach_and_for_accounts() -> None:
    user = RunAs(60100, 60100)
    with tempfile.TemporaryDirectory() as name:  # where everyone may enter
        top = Path(name)
        closed, shared = top / "closed", top / "shared"
        for directory, mode in ((closed, 0o700), (shared, 0o755)):
            directory.mkdir()
            (directory / "program").write_text("x")
            (directory / "program").chmod(0o644)
            directory.chmod(mode)
        top.chmod(0o711)
        (top / "secret").write_text("x")
        (top / "secret").chmod(0o600)

        assert unreachable(shared / "program", user, READ) is None
        assert "cannot be entered" in str(unreachable(closed / "program", user, READ))
        assert "is not open to it" in str(unreachable(top / "secret", user, READ))
        assert "is not open to it" in str(unreachable(shared / "program", user, EXECUTE))
        own = RunAs(os.geteuid(), os.getegid())  # the owner's bits apply to the owner
        assert unreachable(closed / "program", own, READ) is None
    assert LocalUsers(None).agent(0) is None and not LocalUsers(None).isolated
    users = LocalUsers(60100)
    assert (users.agent(2), users.sidecar(2)) == (RunAs(60104, 60104), RunAs(60105, 60105))
    assert LocalUsers(0).taken(1)[0] == "user id 0 belongs to 'root'"


def test_agent_command_only_replaces_a_leading_python() -> None:
    assert agent_command(["python3", "-m", "app"]) == [sys.executable, "-m", "app"]
    assert agent_command(["node", "python"]) == ["node", "python"]


def test_restart_backoff_doubles_to_a_cap_and_resets_after_a_stable_run() -> None:
    restarts = Restarts()
    delays = []
    for now in range(8):
        delays.append(restarts.failed(now=float(now), ran_for=1.0))
        restarts.restarted()
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert restarts.count == 8
    assert restarts.failed(now=100.0, ran_for=120.0) == 1
    assert not restarts.is_due(100.5)
    assert restarts.is_due(101.0)


def test_message_counts_sum_labelled_samples_and_tolerate_missing() -> None:
    text = (
        "# TYPE mas_messages_sent counter\n"
        'mas_messages_sent_total{kind="message"} 3.0\n'
        'mas_messages_sent_total{kind="reply"} 2.0\n'
        "# TYPE mas_deliveries counter\n"
        "mas_deliveries_total 7.0\n"
        "mas_deliveries_created 1.7e9\n"
    )
    counts = message_counts(text)
    assert (counts.sent, counts.delivered) == (5.0, 7.0)
    assert (counts.replies, counts.refused, counts.dead_letters) == (None, None, None)
    # a labelled counter with no sample yet is exported (its TYPE line): 0, not unknown
    assert message_counts("# TYPE mas_dead_letters counter\n").dead_letters == 0
    assert message_counts("# TYPE other counter\nother_total 1\n").sent is None
    assert message_counts("not prometheus {{{").delivered is None


def test_summary_table_aligns_columns() -> None:
    rows = [
        ReplicaRow("default/pinger", 0, 40001, "running", 0, 0, MessageCounts(12.0, 0.0, 12.0)),
        ReplicaRow("default/long-name", 1, 40002, "backoff", 3, 1, MessageCounts(delivered=5.0)),
    ]
    assert format_table(rows) == [
        "AGENT              REPLICA  PORT   STATUS   RESTARTS  SIDECAR RESTARTS  SENT  DELIVERED"
        "  REPLIES  REFUSED  DEAD LETTERS",
        "default/pinger     0        40001  running  0         0                 12    0"
        "          12       -        -",
        "default/long-name  1        40002  backoff  3         1                 -     5"
        "          -        -        -",
    ]


def test_message_counts_count_refusals_and_dead_letters_but_not_accepted_decisions() -> None:
    text = (
        "# TYPE mas_gateway_decisions counter\n"
        'mas_gateway_decisions_total{decision="accepted"} 9.0\n'
        'mas_gateway_decisions_total{decision="denied"} 1.0\n'
        'mas_gateway_decisions_total{decision="dlp_blocked"} 2.0\n'
        "# TYPE mas_dead_letters counter\n"
        'mas_dead_letters_total{reason="max_attempts"} 1.0\n'
        "# TYPE mas_replies counter\n"
        "mas_replies_total 4.0\n"
    )
    counts = message_counts(text)
    assert (counts.refused, counts.dead_letters, counts.replies) == (3.0, 1.0, 4.0)
    only_accepted = 'mas_gateway_decisions_total{decision="accepted"} 9.0\n'
    assert message_counts("# TYPE mas_gateway_decisions counter\n" + only_accepted).refused == 0


def test_the_readiness_deadline_grows_with_the_sidecars_started_at_once() -> None:
    # 200 sidecars starting together on a few cores take minutes: a fixed 15 s per sidecar
    # would give up on the first one while the others hold the cores.
    assert SIDECAR_READY_TIMEOUT <= ready_timeout(1) < ready_timeout(50) < ready_timeout(200)
    assert ready_timeout(200) >= 200 * 2 / (os.cpu_count() or 1)


def test_sidecar_ports_lie_below_the_range_given_to_outgoing_connections() -> None:
    # A port an outgoing connection was given cannot be bound: hundreds of sidecars starting
    # at once open enough connections to take some of the ports chosen for them.
    ports = list(itertools.islice(listen_ports(), 50))
    assert len(set(ports)) == 50
    assert all(LISTEN_PORTS_FROM <= port < ephemeral_low() for port in ports)


def test_a_free_port_lies_below_that_range_and_is_not_handed_out_twice_in_a_row() -> None:
    # The tests' sidecars and servers bind ports free_port chose a moment before: one an
    # outgoing connection took meanwhile, or one given twice, fails a start ("address in use").
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == 500
    assert all(LISTEN_PORTS_FROM <= port < ephemeral_low() for port in ports)


def test_describe_exit() -> None:
    assert describe_exit(3) == "status 3"
    assert describe_exit(-9) == "signal SIGKILL"


# mas up, end to end


def alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(needle: str) -> list[int]:
    """PIDs of live processes whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if needle in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def assert_no_survivors(output: str) -> None:
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", output)]
    assert pids, "no child PIDs in the output"
    assert [pid for pid in pids if alive(pid)] == []
    for port in re.findall(r"ready on :(\d+)", output):
        assert processes_mentioning(f"--port {port} ") == []


# The summary table's columns after AGENT and REPLICA (the cells final_table gives).
HEADERS = ("PORT", "STATUS", "RESTARTS", "SIDECAR RESTARTS", "SENT", "DELIVERED", "REPLIES",
           "REFUSED", "DEAD LETTERS")  # fmt: skip


def final_table(output: str) -> dict[str, list[str]]:
    """The last summary table: ``agent-replica`` -> its cells."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("AGENT "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        agent, replica, *cells = re.split(r"\s{2,}", line.strip())
        rows[f"{agent}-{replica}"] = cells
    return rows


class MasUp:
    """``mas up`` as a subprocess, its output collected line by line; as a context manager,
    killed on the way out if it still runs."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*MAS, "up", *args],
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 30.0) -> re.Match[str]:
        """The first line from index ``after`` on matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if match := re.search(pattern, line):
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def __enter__(self) -> MasUp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def pong_since(self, match: re.Match[str]) -> None:
        """Wait for a pong of the quickstart printed after the line ``match`` is in."""
        after = next(i for i, line in enumerate(self.lines) if match[0] in line)
        self.wait_for(r"^pinger\[0\] \| ping \d+ -> pong ", after=after)

    def interrupt(self) -> tuple[int, str]:
        """Stop it as Ctrl-C does; the status and the whole output."""
        self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        """Wait for the exit; the status and the whole output."""
        try:
            status = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._reader.join(5)
        return status, "\n".join(self.lines)


def test_quickstart_exchanges_messages_and_stops_after_duration(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    run = subprocess.run(
        [*MAS, "up", str(QUICKSTART), "--duration", "12", "--log-dir", str(log_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = run.stdout
    assert run.returncode == 0, output + run.stderr
    assert re.search(
        r"mas\s+\| redis ready at redis://:\*\*\*@127\.0\.0\.1:\d+/0 \(pid \d+\)", output
    )
    assert re.search(r"sidecar default/ponger-0 ready on :\d+ \(pid \d+\)", output)
    pongs = re.findall(r"^pinger\[0\] \| ping \d+ -> pong ", output, re.MULTILINE)
    assert len(pongs) >= 3, output
    assert re.search(r"^ponger\[0\] \| note from default/pinger", output, re.MULTILINE)
    table = final_table(output)
    assert set(table) == {"default/pinger-0", "default/ponger-0"}
    status, restarts, sidecar_restarts, _sent, delivered, *_ = table["default/ponger-0"][1:]
    assert (status, restarts, sidecar_restarts) == ("running", "0", "0")
    assert int(delivered) >= 2 * len(pongs) - 2
    pinger = dict(zip(HEADERS, table["default/pinger-0"], strict=True))
    assert int(pinger["SENT"]) >= 2 * len(pongs) - 2
    # the pinger's requests are answered: its replies are counted, not its deliveries
    assert int(pinger["REPLIES"]) >= len(pongs)
    assert int(pinger["REFUSED"]) >= 1  # admin.shutdown, denied by the gateway (below)
    assert output.rstrip().endswith("stopped")
    # every gateway check is on: the folder's policy, per-agent ACL users, signed messages
    assert "gateway policy revision" in output
    assert "2 least-privilege Redis users created" in output
    assert re.search(
        r"^pinger\[0\] \| denied by the gateway: no rule allows default/pinger to send "
        r"'admin.shutdown' to default/ponger",
        output,
        re.MULTILINE,
    )
    assert re.search(r"audit trail of default/pinger: \d+ entries in 1 chain\(s\), intact", output)
    # checkpointed by mas up as the control plane, signed by the anchor in its memory
    assert re.search(
        r"checked against checkpoint #\d+ \(.*\): \d+ entries up to \d+-\d+; signed by "
        r"anchor \S+, verified",
        output,
    )
    assert (log_dir / "default_ponger-0.sidecar.log").exists()
    # What outlives the run, in the state directory: the embedded Redis's data and the
    # trust anchor's public key, also among every run's (the logs went to --log-dir).
    kept = sorted(p.name for p in (tmp_path / ".mas").iterdir())
    assert kept == ["anchor.pub", "anchors", "redis"]
    assert_no_survivors(output)


def test_sigint_stops_cleanly_after_a_sidecar_was_killed_and_restarted(tmp_path: Path) -> None:
    up = MasUp(str(QUICKSTART), "--log-dir", str(tmp_path / "logs"), cwd=tmp_path)
    try:
        sidecar_pid = int(up.wait_for(r"sidecar default/ponger-0 ready on :\d+ \(pid (\d+)\)")[1])
        up.wait_for(r"^pinger\[0\] \| ping \d+ -> pong ")
        os.kill(sidecar_pid, signal.SIGKILL)
        up.wait_for(r"sidecar default/ponger-0 exited with signal SIGKILL; restarting in 1s")
        up.pong_since(up.wait_for(r"sidecar default/ponger-0 restarted \(pid \d+\)"))
        status, output = up.interrupt()
    finally:
        if up.process.poll() is None:
            up.process.kill()
    assert status == 0, output
    assert "mas       | stop requested" in output
    assert output.index("stopping agents") < output.index("stopping sidecars")
    assert output.index("stopping sidecars") < output.index("stopping redis")
    assert final_table(output)["default/ponger-0"][4] == "1"
    assert_no_survivors(output)


def test_a_killed_redis_is_restarted_provisioned_again_and_agents_work_again(
    tmp_path: Path,
) -> None:
    up = MasUp(str(QUICKSTART), "--log-dir", str(tmp_path / "logs"), cwd=tmp_path)
    try:
        port, redis_pid = up.wait_for(r"redis ready at \S+:(\d+)/0 \(pid (\d+)\)").groups()
        up.wait_for(r"^pinger\[0\] \| ping \d+ -> pong ")
        killed = time.monotonic()
        os.kill(int(redis_pid), signal.SIGKILL)
        up.wait_for(r"redis exited with signal SIGKILL; restarting in 1s")
        up.wait_for(rf"redis restarted on :{port} \(pid \d+, restart 1\)")
        up.pong_since(up.wait_for(r"redis provisioned again: "))
        working_again = time.monotonic() - killed
        status, output = up.interrupt()
    finally:
        up.finish()  # kills it if a wait failed
    assert status == 0, output
    assert_no_survivors(output)
    print(f"\nRECOVERY mas-up redis SIGKILL: a ping answered again after {working_again:.2f}s")


def test_failed_agents_are_restarted_with_backoff_and_counted(
    tmp_path: Path, redis_url: str
) -> None:
    crash = "import sys; print('crashing', flush=True); sys.exit(3)"
    manifests = [
        manifest("crasher", ["python", "-c", crash]),
        manifest("finisher", ["python", "-c", "print('all done')"]),
    ]
    (tmp_path / "agents.yaml").write_text("\n---\n".join(json.dumps(m) for m in manifests))
    args = [str(tmp_path), "--duration", "6", "--redis-url", redis_url, "--log-dir", "logs"]
    up = MasUp(*args, cwd=tmp_path)
    status, output = up.finish()

    assert status == 0, output
    assert f"using redis at {masked_url(redis_url)}" in output
    assert "the password in --redis-url shows on this command line to every local" in output
    assert "crasher[0]  | crashing" in output
    assert "finisher[0] | all done" in output
    assert "agent default/crasher-0 exited with status 3; restarting in 1s" in output
    assert "agent default/crasher-0 exited with status 3; restarting in 2s" in output
    assert "agent default/finisher-0 completed" in output
    table = final_table(output)
    assert table["default/finisher-0"][1:3] == ["completed", "0"]
    assert table["default/crasher-0"][1] in ("backoff", "running")
    assert int(table["default/crasher-0"][2]) >= 2
    assert (tmp_path / "logs" / "default_crasher-0.sidecar.log").exists()
    assert_no_survivors(output)


# The command line


def test_invalid_manifest_is_one_line_and_status_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(manifest("bad", ["x"], replicas=50)))
    run = subprocess.run(
        [*MAS, "up", str(tmp_path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == (
        f"mas: error: {path}: spec.replicas: mas up runs 1 to 20 replicas of an agent, not 50 "
        "(on Kubernetes only the Deployment bounds it)\n"
    )


def test_dead_letters_need_a_sidecar_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAS_SIDECAR_URL", raising=False)
    assert main(["dead-letters", "list"]) == 2
    assert "no sidecar URL" in capsys.readouterr().err


async def reject_one_message(sender_of: SidecarProcess, receiver_of: SidecarProcess) -> str:
    """Send a message to the receiver and reject it there; the message id."""
    async with sender_of.client() as sender, receiver_of.client() as receiver:
        message_id = await sender.send("bob", "job", {"n": 1})
        async with contextlib.aclosing(receiver.deliveries()) as deliveries:
            async for delivery in deliveries:
                await receiver.reject(delivery["id"], "bad job")
                break
    return message_id


def test_dead_letters_list_replay_and_delete(
    sidecars: Sidecars, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = sidecars.start("default/alice")
    bob = sidecars.start("default/bob")
    message_id = asyncio.run(reject_one_message(alice, bob))
    monkeypatch.setenv("MAS_SIDECAR_TOKEN", bob.token)  # as the agent's environment has it

    assert main(["dead-letters", "list", "--sidecar", bob.url]) == 0
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["message"]["id"] == message_id
    assert "bad job" in entry["reason"]

    assert main(["dead-letters", "replay", entry["id"], "--sidecar", bob.url]) == 0
    assert capsys.readouterr().out.startswith(f"replayed {entry['id']} as message ")
    assert main(["dead-letters", "list", "--sidecar", bob.url]) == 0
    assert capsys.readouterr().out == ""

    assert main(["dead-letters", "delete", "--sidecar", bob.url, entry["id"]]) == 1
    error = capsys.readouterr().err
    assert error.startswith("mas: error: dead_letter_not_found")
    assert len(error.splitlines()) == 1

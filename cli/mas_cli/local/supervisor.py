"""``mas up DIR``: run every agent of a directory of manifests, with its sidecar, on this machine.

Starts Redis (the embedded Valkey unless a URL is given), one sidecar per agent replica, and,
once every sidecar is ready, the agent programs. Then it supervises them like Kubernetes would:
a process that fails is restarted with exponential back-off and counted, an agent that exits 0
is left completed, and a summary table is printed every few seconds and whenever a status
changes. On SIGINT/SIGTERM (or after ``duration``) it stops agents, then sidecars, then Redis.

The embedded Valkey keeps its data in the state directory (``.mas/redis``, see
:mod:`mas_cli.local.redis_data`) with an append-only file flushed every second and an ACL file, so
messages accepted and not yet delivered, agents' state and audit trails are there for the next
run of the folder; ``ephemeral`` runs it on a temporary directory that goes with the run. Each
run gives the agents new Redis passwords, saves their users, and drops the users of agents no
longer in the folder.

What it keeps apart (see :mod:`mas_cli.local.users`): the embedded Redis has a generated
administrator password, which only ``mas up`` knows; each agent gets its own Redis user (held
by its sidecars), its own identity (the trust anchor's key stays in ``mas up``'s memory) and its
own API token, which its sidecars require of every caller. Credentials live in a private
directory of the run, removed when it stops. Run as root, every agent program and its sidecars
run as unprivileged users of their own, so the kernel keeps each agent from the others' and the
sidecars' secrets (unless those users cannot reach the interpreter or the agents' folders: then
everything runs as root, and it says why); run as anyone else, everything runs as that user.
Which of these holds is the first thing it says.

It also plays the control plane's part in the audit trails, as the operator does: every
``checkpoint_every`` seconds a signed checkpoint of each agent's trail that grew since its last
round (the anchor in its memory signs it; one ``XREVRANGE`` per agent tells which grew, and every
trail gets a full round at least every ``UNCHANGED_AUDIT_ROUNDS`` rounds, so an idle agent costs
the server little), entries past the policy's retention archived to ``audit_archive`` and then
trimmed (:mod:`mas_control.audit_keeper`); at the end, a last checkpoint and each trail verified.
Sidecars started together share the machine's cores, so the time they may take to get ready
grows with their number (:func:`ready_timeout`).

Unless told not to, it also serves the web dashboard (:mod:`mas_dashboard`) on a free loopback
port, from a thread, reading Redis as the dashboard's own user, and prints its URL; with
``dashboard_writes`` the dashboard may replay and delete dead letters, with the token it keeps
in the state directory's ``dashboard-token``.

Used by the ``mas up`` command (:mod:`mas_cli.main`).
"""

from __future__ import annotations

import getpass
import importlib.util
import io
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

import redis

from mas_cli.audit_trails import Evidence, TrailHeldError, verify_trail
from mas_cli.dashboard_setup import dashboard_url, write_token
from mas_cli.local.agent_process import AgentProcess
from mas_cli.local.display import Console, ReplicaRow
from mas_cli.local.issuer import LocalIdentity
from mas_cli.local.metrics import MessageCounts, scrape
from mas_cli.local.plan import (
    ReplicaPlan,
    a2a_client_keys,
    external_credentials,
    plan_replicas,
)
from mas_cli.local.processes import ChildProcess, SidecarProcess
from mas_cli.local.redis_data import RedisDataDir
from mas_cli.local.redis_server import RedisServer, RedisServerError, listen_ports
from mas_cli.local.restarts import Restarts
from mas_cli.local.secrets import EnvReferences
from mas_cli.local.users import (
    DEFAULT_UID_BASE,
    EXECUTE,
    READ,
    LocalUsers,
    RunAs,
    local_users,
    unreachable,
)
from mas_control.acl_file import save_acl_users
from mas_control.audit_keeper import keep_trail, trail_heads
from mas_control.provision import (
    apply_acl_user,
    ensure_functions,
    publish_policy,
    register_agent,
    register_external_agent,
)
from mas_control.recovery import PROBE_SECONDS, Provisioned, ServerWatch, apply_repair
from mas_core.a2a_card import CLIENTS_DIR as A2A_CLIENTS_DIR
from mas_core.a2a_remotes import REMOTES_DIR, REMOTES_DIR_ENV
from mas_core.acl import (
    DASHBOARD_USER,
    DASHBOARD_WRITER,
    USER_PREFIX,
    acl_username,
    agent_redis_url,
    dashboard_user,
    generate_password,
    masked_url,
)
from mas_core.identity.credentials import PRIVATE_MODE, private_directory, write_atomic
from mas_core.manifests import AgentManifest, ExternalAgentManifest
from mas_core.policy.document import CompiledPolicy, effective_policy
from mas_core.sidecar_token import TOKEN_ENV, new_token
from mas_dashboard.background import DashboardThread
from mas_dashboard.server import DashboardSettings

TABLE_EVERY = 5.0
TICK = 0.2
AGENT_GRACE = 10.0
SIDECAR_READY_TIMEOUT = 15.0
SIDECAR_START_CPU_SECONDS = 4.0  # CPU time one sidecar may take to start, with room to spare
DASHBOARD_TOKEN_FILE = "dashboard-token"  # in the state directory
UNCHANGED_AUDIT_ROUNDS = 30  # an audit trail nothing was added to is looked at this rarely
NOT_ROOT = (
    "mas up runs as {user}, not root: agents run as your user and are not isolated from each "
    "other, from the sidecars or from your files"
)
CANNOT_ISOLATE = (
    "NOT ISOLATED: running as root, mas up would run each agent and its sidecars as users of "
    "their own (uids from --uid-base {base}), but {problems}. So every process runs as root, "
    "and agents are not isolated from each other, from the sidecars or from this machine. "
    "Make those paths readable by others (chmod o+rx), or install mas in a virtual environment "
    "that others can read, or choose another --uid-base"
)
ISOLATED = (
    "agents and their sidecars run as users of their own (uids {first}-{last}): no agent can "
    "read another's secrets or its sidecars'"
)


@dataclass(frozen=True)
class UpOptions:
    """The settings of one ``mas up`` run."""

    directory: Path
    log_dir: Path
    # What outlives a run: the embedded Valkey's data (unless ephemeral), the anchor's public key.
    state_dir: Path
    redis_url: str | None = None
    duration: float | None = None
    uid_base: int = DEFAULT_UID_BASE
    # The embedded Valkey on a temporary directory: the run starts empty and leaves nothing.
    ephemeral: bool = False
    audit_archive: Path | None = None  # where audit entries go before a retention trims them
    checkpoint_every: float = 10.0  # seconds between checkpoints of every audit trail
    # The values of the agents' spec.env references (secrets file, mas up's environment).
    references: EnvReferences = field(default_factory=EnvReferences)
    dashboard: bool = True  # serve the web dashboard on a free loopback port
    dashboard_writes: bool = False  # let it replay and delete dead letters (with its token)
    # The A2A agents outside mas that the agents may call (ExternalAgent manifests).
    externals: tuple[ExternalAgentManifest, ...] = ()


@dataclass
class Replica:
    """The live processes of one :class:`ReplicaPlan` and their restart bookkeeping."""

    plan: ReplicaPlan
    sidecar: SidecarProcess
    sidecar_started_at: float = 0.0
    agent: AgentProcess | None = None
    completed: bool = False
    agent_restarts: Restarts = field(default_factory=Restarts)
    sidecar_restarts: Restarts = field(default_factory=Restarts)
    counts: MessageCounts = field(default_factory=MessageCounts)

    @property
    def status(self) -> str:
        if self.completed:
            return "completed"
        if not self.sidecar.running():
            return "sidecar down"
        if self.agent_restarts.due_at is not None:
            return "backoff"
        return "running" if self.agent is not None and self.agent.running() else "starting"

    def row(self) -> ReplicaRow:
        return ReplicaRow(
            agent_id=self.plan.agent_id,
            replica=self.plan.index,
            port=self.plan.port,
            status=self.status,
            restarts=self.agent_restarts.count,
            sidecar_restarts=self.sidecar_restarts.count,
            counts=self.counts,
        )


def describe_exit(code: int | None) -> str:
    """``status N`` for an exit status, ``signal NAME`` for a death by signal."""
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _installed() -> list[Path]:
    """What every agent and sidecar process reads: this interpreter, the installed packages,
    and the ``mas``, ``mas_core`` and ``mas_sidecar`` packages (in the source tree for an
    editable install)."""
    paths = [Path(sys.executable), Path(sysconfig.get_paths()["purelib"])]
    for package in ("mas", "mas_core", "mas_sidecar"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            paths.append(Path(spec.origin).parent)
    return paths


def _unreachable(user: RunAs, needs: list[tuple[Path, int]]) -> list[str]:
    """What of ``needs`` (paths and the access wanted) ``user`` cannot reach: one description
    each, the same for every user kept out the same way."""
    return [
        f"their users cannot reach {path} ({why})"
        for path, access in needs
        if (why := unreachable(path, user, access)) is not None
    ]


def _program(plan: ReplicaPlan) -> Path | None:
    """The file ``plan``'s command runs, when it can be found (else the run says why)."""
    command = plan.command[0]
    if "/" in command:
        return plan.cwd / command
    found = shutil.which(command)
    return Path(found) if found else None


def ready_timeout(sidecars: int) -> float:
    """How long ``sidecars`` started at once may take until the last is ready: each needs
    ``SIDECAR_START_CPU_SECONDS`` of CPU, and they share the machine's cores."""
    cores = os.cpu_count() or 1
    return SIDECAR_READY_TIMEOUT + SIDECAR_START_CPU_SECONDS * sidecars / cores


def _in_parallel(action: Callable[[ChildProcess], object], processes: list[ChildProcess]) -> None:
    if processes:
        with ThreadPoolExecutor(max_workers=len(processes)) as pool:
            list(pool.map(action, processes))


class Supervisor:
    """Runs one ``mas up``; :meth:`run` returns the exit status."""

    def __init__(
        self,
        agents: list[AgentManifest],
        policy: CompiledPolicy | None,
        options: UpOptions,
        out: TextIO,
    ) -> None:
        self.options = options
        self.policy = policy
        self.agents = [agent for agent in agents if agent.spec.local is not None]
        self._index = {agent.agent_id: index for index, agent in enumerate(self.agents)}
        # Each agent's API token: its sidecars require it, its program presents it.
        self._tokens = {agent.agent_id: new_token() for agent in self.agents}
        self._agent_urls: dict[str, str] = {}
        ports = listen_ports()  # outside the ephemeral range: hundreds of sidecars connect
        self.plans = plan_replicas(agents, options.directory.resolve(), ports, options.references)
        for agent in self.agents:  # a missing A2A client key fails now, before anything runs
            a2a_client_keys(agent, options.references.secrets)
        self._remote_tokens = external_credentials(options.externals, options.references.secrets)
        self.console = Console(out, max(len(plan.output_prefix) for plan in self.plans))
        self._runtime = tempfile.TemporaryDirectory(prefix="mas-up-")
        self.users, self._users_said = self._choose_users(local_users(options.uid_base))
        self.identity = LocalIdentity(
            Path(self._runtime.name),
            options.state_dir,
            self.agents,
            {agent_id: self.users.sidecar(index) for agent_id, index in self._index.items()},
        )
        self.replicas: list[Replica] = []
        self.redis: RedisServer | None = None
        self._redis_data = RedisDataDir(options.state_dir)
        self.redis_url = options.redis_url or ""
        self.redis_restarts = Restarts()
        self._redis_started_at = 0.0
        self._passwords: dict[str, str] = {}  # agent id -> its Redis user's password
        self._watch = ServerWatch()
        self._probe_at = 0.0
        self._probe_client: redis.Redis | None = None
        self._audit_rounds = 0
        self._audit_heads: dict[str, object] = {}  # agent id -> its trail's newest id seen
        self.stopping = threading.Event()
        self._audit_keeper: threading.Thread | None = None
        self._audit_said: dict[str, str | None] = {}
        self._last_table: tuple[tuple[str, int, int], ...] = ()
        self._table_at = 0.0
        self._dashboard: DashboardThread | None = None

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: finish the current step, then stop everything."""
        self.stopping.set()

    def run(self) -> int:
        """Start everything, supervise until stopped, stop everything; 0 on a clean stop."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self._start()
            self._supervise()
        finally:
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _start(self) -> None:
        self.console.progress(self._users_said)
        if self.options.redis_url is None:
            self.redis = self._embedded_redis()
            self.redis.start()
            self._redis_started_at = time.monotonic()
            self.redis_url = self.redis.url
            pid = self.redis.process.pid if self.redis.process else None
            self.console.progress(f"redis ready at {masked_url(self.redis_url)} (pid {pid})")
            if self.options.ephemeral:
                self.console.progress("redis data is temporary (--ephemeral): nothing is kept")
            else:
                self.console.progress(f"redis data kept in {self.redis.data_dir}")
        else:
            self.console.progress(f"using redis at {masked_url(self.redis_url)}")
        self._publish_policy()
        self._register_agents()
        self._create_acl_users()
        self._start_dashboard()
        if self.identity.issue_all():
            self.console.progress(
                f"removed the private keys earlier versions kept in {self.options.state_dir}"
            )
        self.console.progress("agent credentials issued (the trust anchor stays in memory)")
        self.console.progress(f"sidecar logs in {self.options.log_dir}")
        for plan in self.plans:
            sidecar = self._sidecar(plan)
            # Start every sidecar before waiting for any: they become ready concurrently.
            sidecar.start(wait=False)
            self.replicas.append(Replica(plan, sidecar, sidecar_started_at=time.monotonic()))
        # They all start at once and share the cores: each gets its time plus its share.
        deadline = time.monotonic() + ready_timeout(len(self.replicas))
        for replica in self.replicas:
            replica.sidecar.wait_ready(max(1.0, deadline - time.monotonic()))
            self.console.progress(
                f"sidecar {replica.plan.label} ready on :{replica.plan.port} "
                f"(pid {replica.sidecar.pid})"
            )
            if replica.plan.a2a_card_url is not None:
                self.console.progress(
                    f"A2A: {replica.plan.label} serves its card at {replica.plan.a2a_card_url}"
                )
        self._audit_keeper = threading.Thread(
            target=self._keep_audit_trails, name="mas-audit-keeper", daemon=True
        )
        self._audit_keeper.start()
        for replica in self.replicas:
            if not self.stopping.is_set():
                self._start_agent(replica)

    def _embedded_redis(self) -> RedisServer:
        """The embedded Valkey: on the state directory, its data and users kept across runs,
        or (ephemeral) on a temporary directory."""
        if self.options.ephemeral:
            return RedisServer()
        data_dir = self._redis_data.acquire()
        return RedisServer(data_dir=data_dir, append_only=True, acl_file=True)

    def _choose_users(self, wanted: LocalUsers) -> tuple[LocalUsers, str]:
        """The users to run as, and what to say about it: ``wanted`` when they are free and
        can reach what they need, else the invoking user's, saying why."""
        if not wanted.isolated:
            return wanted, NOT_ROOT.format(user=getpass.getuser())
        runtime = Path(self._runtime.name)
        runtime.chmod(0o711)  # each sidecar's user enters its own directory, lists none
        problems = wanted.taken(len(self.agents))
        for plan in self.plans:
            index = self._index[plan.agent_id]
            sidecar, agent = wanted.sidecar(index), wanted.agent(index)
            assert sidecar is not None and agent is not None
            needs = [(path, READ | EXECUTE) for path in _installed()]
            problems += _unreachable(sidecar, [*needs, (runtime, EXECUTE)])
            needs.append((plan.cwd, READ | EXECUTE))
            program = _program(plan)
            if program is not None:
                needs.append((program, EXECUTE))
            problems += _unreachable(agent, needs)
        base = self.options.uid_base
        if problems:
            said = CANNOT_ISOLATE.format(base=base, problems="; ".join(dict.fromkeys(problems)))
            return LocalUsers(None), said
        return wanted, ISOLATED.format(first=base, last=base + 2 * len(self.agents) - 1)

    def _publish_policy(self) -> None:
        """Put the folder's gateway policies in force before any sidecar starts."""
        if self.policy is None:
            self.console.progress(
                "no GatewayPolicy in the folder: every send will be refused (default deny)"
            )
            return
        client = redis.Redis.from_url(self.redis_url)
        try:
            publish_policy(client, self.policy)
        finally:
            client.close()
        self.console.progress(
            f"gateway policy revision {self.policy.revision} published "
            f"({len(self.policy.policies)} policies)"
        )

    def _register_agents(self) -> None:
        """Load the function library the sidecars call and write each agent's registry entry
        (its capabilities and roles), as the operator does on Kubernetes: the control plane
        vouches for them, a sidecar cannot."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            ensure_functions(client)
            for agent in self.agents:
                register_agent(client, agent.agent_id, agent.spec.capabilities, agent.spec.roles)
            self._register_externals(client)
        finally:
            client.close()

    def _register_externals(self, client: redis.Redis) -> None:
        """Write the external A2A agents' entries (idempotent)."""
        for external in self.options.externals:
            spec = external.spec
            register_external_agent(
                client, external.agent_id, spec.capabilities, spec.url, spec.description
            )

    def _create_acl_users(self) -> None:
        """One least-privilege Redis user per agent, as the operator creates on Kubernetes; on
        the embedded server, the users an earlier run left for agents no longer in the folder
        go. The server saves them when it keeps an ACL file."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            agent_ids = list(dict.fromkeys(plan.agent_id for plan in self.plans))
            for agent_id in agent_ids:
                password = generate_password()
                apply_acl_user(client, agent_id, password)
                self._passwords[agent_id] = password
                self._agent_urls[agent_id] = agent_redis_url(self.redis_url, agent_id, password)
            if self.redis is not None:
                self._drop_users_of_others(client, {acl_username(a) for a in agent_ids})
            save_acl_users(client)
        except redis.ResponseError as exc:
            self._agent_urls.clear()
            self._passwords.clear()
            self.console.progress(
                f"cannot create Redis ACL users ({exc}): sidecars use the given Redis URL"
            )
            return
        finally:
            client.close()
        self.console.progress(f"{len(self._agent_urls)} least-privilege Redis users created")

    def _start_dashboard(self) -> None:
        """Serve the dashboard as its own Redis user, and say where (or why not). On the
        embedded server, the dashboard user this run does not use goes (both, without a
        dashboard), so none outlives the run that knew its password."""
        writes = self.options.dashboard_writes
        if self.redis is not None:
            self._drop_dashboard_users(
                keep={dashboard_user(writes=writes)} if self.options.dashboard else set()
            )
        if not self.options.dashboard:
            return
        token_file = self.options.state_dir / DASHBOARD_TOKEN_FILE
        token = write_token(token_file) if writes else None
        try:
            url, _ = dashboard_url(self.redis_url, writes=token is not None)
            self._dashboard = DashboardThread(DashboardSettings(url, write_token=token))
            where = self._dashboard.start()
        except (redis.RedisError, RuntimeError) as exc:
            self._dashboard = None
            self.console.progress(f"dashboard not started: {exc}")
            return
        said = f" (write actions on: token in {token_file})" if token else ""
        self.console.progress(f"dashboard at {where}{said}")

    def _drop_dashboard_users(self, keep: set[str]) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            for user in {DASHBOARD_USER, DASHBOARD_WRITER} - keep:
                client.acl_deluser(user)
            save_acl_users(client)
        finally:
            client.close()

    def _drop_users_of_others(self, client: redis.Redis, current: set[str]) -> None:
        """Delete the agents' users that are not in ``current`` (left by an earlier run)."""
        for user in client.acl_users():
            name = user.decode() if isinstance(user, bytes) else str(user)
            if name.startswith(f"{USER_PREFIX}.") and name not in current:
                client.acl_deluser(name)

    def _sidecar(self, plan: ReplicaPlan) -> SidecarProcess:
        directory = self.identity.credentials_dir(plan.agent_id)
        env = {**plan.sidecar_env, "MAS_CREDENTIALS_DIR": str(directory)}
        if "MAS_A2A" in env:
            env["MAS_A2A_CLIENTS_DIR"] = str(self._a2a_clients(plan.agent_id))
        if self._remote_tokens:
            env[REMOTES_DIR_ENV] = str(self._a2a_remotes(plan.agent_id))
        return SidecarProcess(
            plan.agent_id,
            self._agent_urls.get(plan.agent_id, self.redis_url),
            port=plan.port,
            env=env,
            log_path=self.options.log_dir / plan.log_file_name(),
            token=self._tokens[plan.agent_id],
            credentials_dir=directory,
            user=self.users.sidecar(self._index[plan.agent_id]),
        )

    def _a2a_clients(self, agent_id: str) -> Path:
        """The directory of the A2A clients' keys of ``agent_id``'s sidecars (one file each,
        private to its sidecars' user), written from the secrets file."""
        agent = self.agents[self._index[agent_id]]
        user = self.users.sidecar(self._index[agent_id])
        owner = user.owner if user is not None else None
        directory = self.identity.credentials_dir(agent_id) / A2A_CLIENTS_DIR
        private_directory(directory, owner)
        for name, key in a2a_client_keys(agent, self.options.references.secrets).items():
            write_atomic(directory / name, key.encode(), PRIVATE_MODE, owner)
        return directory

    def _a2a_remotes(self, agent_id: str) -> Path:
        """The directory of the external agents' tokens for ``agent_id``'s sidecars (every
        sender's: the policy, which may change while they run, decides who calls; private to
        its sidecars' user, never the agent's), written from the secrets file."""
        user = self.users.sidecar(self._index[agent_id])
        owner = user.owner if user is not None else None
        directory = self.identity.credentials_dir(agent_id) / REMOTES_DIR
        private_directory(directory, owner)
        for name, token in self._remote_tokens.items():
            write_atomic(directory / name, token.encode(), PRIVATE_MODE, owner)
        return directory

    def _start_agent(self, replica: Replica) -> None:
        plan = replica.plan
        replica.agent = AgentProcess(
            plan.command,
            env={**plan.agent_env, TOKEN_ENV: self._tokens[plan.agent_id]},
            cwd=plan.cwd,
            console=self.console,
            prefix=plan.output_prefix,
            user=self.users.agent(self._index[plan.agent_id]),
        )
        replica.agent.start()
        self.console.progress(f"agent {plan.label} started (pid {replica.agent.pid})")

    def _supervise(self) -> None:
        started = time.monotonic()
        duration = self.options.duration
        if duration is not None:
            self.console.progress(f"running for {duration:g}s")
        while not self.stopping.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                self.console.progress(f"stopping after {duration:g}s")
                return
            for agent_id in self.identity.renew_due():
                self.console.progress(f"renewed the identity token of {agent_id}")
            self._check_redis(now)
            self._recover_server(now)
            for replica in self.replicas:
                self._check_sidecar(replica, now)
                self._check_agent(replica, now)
            self._maybe_print_table(now)
            self.stopping.wait(TICK)
        self.console.progress("stop requested")

    def _check_redis(self, now: float) -> None:
        """Restart the embedded server when its process ended: same port, password and data
        directory (what it persisted comes back); :meth:`_recover_server` provisions it."""
        server = self.redis
        if server is None or server.running():
            return
        restarts = self.redis_restarts
        if restarts.due_at is None:
            code = server.process.poll() if server.process is not None else None
            delay = restarts.failed(now, now - self._redis_started_at)
            self.console.progress(
                f"redis exited with {describe_exit(code)}; restarting in {delay:g}s "
                "(sidecars answer 503 redis_unavailable meanwhile)"
            )
        elif restarts.is_due(now):
            restarts.restarted()
            self._redis_started_at = now
            try:
                server.restart()
            except RedisServerError as exc:
                self.console.progress(f"redis did not start again: {exc}")
                return
            pid = server.process.pid if server.process else None
            self.console.progress(
                f"redis restarted on :{server.port} (pid {pid}, restart {restarts.count})"
            )

    def _recover_server(self, now: float) -> None:
        """Every ``PROBE_SECONDS``: put back what a restarted or replaced server lost (the
        function library, the agents' users and registry entries, the external agents', the
        policy)."""
        if now < self._probe_at or not self.redis_url:
            return
        self._probe_at = now + PROBE_SECONDS
        agents = {
            agent.agent_id: Provisioned(
                self._passwords[agent.agent_id], agent.spec.capabilities, agent.spec.roles
            )
            for agent in self.agents
            if agent.agent_id in self._passwords
        }
        revision = self.policy.revision if self.policy is not None else None
        if self._probe_client is None:  # one connection, kept: no handshake every second
            self._probe_client = redis.Redis.from_url(
                self.redis_url, socket_timeout=2, socket_connect_timeout=1
            )
        client = self._probe_client
        try:
            facts, repair = self._watch.plan(client, agents, policy_revision=revision)
            apply_repair(client, repair, agents, self.policy)
            if repair:  # a server that lost anything lost the external agents' entries too
                self._register_externals(client)
        except redis.RedisError:
            client.close()  # down or restarting: the next look connects again
            self._probe_client = None
            return
        self._watch.repaired(facts, repair)
        if repair:
            self.console.progress(f"redis provisioned again: {repair.why}")

    def _check_sidecar(self, replica: Replica, now: float) -> None:
        """Restart a sidecar that exited, whatever its status: its agent needs it."""
        if replica.sidecar.running():
            return
        restarts = replica.sidecar_restarts
        if restarts.due_at is None:
            code = replica.sidecar.stop()
            delay = restarts.failed(now, now - replica.sidecar_started_at)
            self.console.progress(
                f"sidecar {replica.plan.label} exited with {describe_exit(code)}; restarting in "
                f"{delay:g}s (log: {replica.sidecar.log_path})"
            )
        elif restarts.is_due(now):
            restarts.restarted()
            replica.sidecar = self._sidecar(replica.plan)
            replica.sidecar_started_at = now
            # Not waiting for readiness keeps supervising the others; the agent retries meanwhile.
            replica.sidecar.start(wait=False)
            self.console.progress(
                f"sidecar {replica.plan.label} restarted (pid {replica.sidecar.pid})"
            )

    def _check_agent(self, replica: Replica, now: float) -> None:
        """Restart an agent that failed; leave one that exited 0 completed."""
        agent = replica.agent
        if agent is None or replica.completed or agent.running():
            return
        restarts = replica.agent_restarts
        if restarts.due_at is None:
            code = agent.stop()
            agent.flush_output()
            if code == 0:
                replica.completed = True
                self.console.progress(f"agent {replica.plan.label} completed")
                return
            delay = restarts.failed(now, now - agent.started_at)
            self.console.progress(
                f"agent {replica.plan.label} exited with {describe_exit(code)}; "
                f"restarting in {delay:g}s"
            )
        elif restarts.is_due(now):
            restarts.restarted()
            self._start_agent(replica)

    def _maybe_print_table(self, now: float) -> None:
        shape = tuple(
            (r.status, r.agent_restarts.count, r.sidecar_restarts.count) for r in self.replicas
        )
        if shape != self._last_table or now - self._table_at >= TABLE_EVERY:
            self._print_table()
            self._last_table = shape
            self._table_at = now

    def _print_table(self) -> None:
        for replica in self.replicas:
            if replica.sidecar.running():
                replica.counts = scrape(
                    replica.plan.sidecar_url, self._tokens[replica.plan.agent_id]
                )
        self.console.table([replica.row() for replica in self.replicas])

    def _keep_audit_trails(self) -> None:
        """The control plane's part in every agent's audit trail, as the operator plays it on
        Kubernetes: a round of the audit keeper per agent every ``checkpoint_every`` seconds."""
        while not self.stopping.wait(self.options.checkpoint_every):
            self._audit_round()

    def _audit_round(self) -> None:
        """Checkpoint every trail; archive and trim past its policy's retention
        (:mod:`mas_control.audit_keeper`); say when a trail is found rewritten."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        self._audit_rounds += 1
        every = self._audit_rounds % UNCHANGED_AUDIT_ROUNDS == 1 or self.stopping.is_set()
        try:
            agent_ids = list(dict.fromkeys(plan.agent_id for plan in self.plans))
            heads = trail_heads(client, agent_ids)
            for agent_id in agent_ids:
                if not every and heads[agent_id] == self._audit_heads.get(agent_id):
                    continue  # nothing added: looked at again within UNCHANGED_AUDIT_ROUNDS
                self._audit_heads[agent_id] = heads[agent_id]
                policy = effective_policy(self.policy, agent_id) if self.policy else None
                kept = keep_trail(
                    client,
                    agent_id,
                    self.identity.anchor,
                    retention=policy.audit.retention if policy else None,
                    archive=self.options.audit_archive,
                )
                if kept.archived:
                    self.console.progress(
                        f"archived {kept.archived} audit entries of {agent_id} in "
                        f"{self.options.audit_archive}"
                    )
                if kept.problem != self._audit_said.get(agent_id):
                    self._audit_said[agent_id] = kept.problem
                    if kept.problem:
                        self.console.progress(
                            f"the audit trail of {agent_id} is NOT intact: {kept.problem}"
                        )
        except (redis.RedisError, OSError) as exc:
            self.console.progress(f"could not checkpoint the audit trails: {exc}")
        finally:
            client.close()

    def _verify_audit_trails(self) -> None:
        """A last checkpoint, then say, per agent, whether its audit trail is intact
        (``mas audit verify``'s check, with the anchor's key and the archive)."""
        if not self.redis_url or self._audit_keeper is None:
            return
        self._audit_keeper.join()
        self._audit_round()
        trust = self.identity.audit_trust()
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            for agent_id in dict.fromkeys(plan.agent_id for plan in self.plans):
                out = io.StringIO()
                evidence = Evidence(trust, self.options.audit_archive)
                verify_trail(client, agent_id, out, evidence)
                for line in out.getvalue().splitlines():
                    self.console.progress(line)
        except (redis.RedisError, TrailHeldError) as exc:
            self.console.progress(f"could not verify the audit trails: {exc}")
        finally:
            client.close()

    def _stop(self) -> None:
        """Agents first (SIGTERM, SIGKILL after a grace period), then sidecars, then the audit
        keeper (after a last checkpoint), then Redis."""
        self.stopping.set()
        if self.replicas:
            self._print_table()
        agents: list[ChildProcess] = [r.agent for r in self.replicas if r.agent is not None]
        if any(agent.running() for agent in agents):
            self.console.progress("stopping agents")
            _in_parallel(lambda agent: agent.stop(AGENT_GRACE), agents)
        for replica in self.replicas:
            if replica.agent is not None:
                replica.agent.flush_output()
        sidecars: list[ChildProcess] = [r.sidecar for r in self.replicas]
        if sidecars:
            self.console.progress("stopping sidecars")
            _in_parallel(lambda sidecar: sidecar.stop(), sidecars)
        if self._dashboard is not None:
            self._dashboard.stop()
        self._verify_audit_trails()
        if self._probe_client is not None:
            self._probe_client.close()
        if self.redis is not None:
            self.console.progress("stopping redis")
            self.redis.stop()
        self._redis_data.release()
        self._runtime.cleanup()  # the credentials of the run
        self.console.progress("stopped")

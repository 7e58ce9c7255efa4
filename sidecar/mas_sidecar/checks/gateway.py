"""The gateway checks, run in the sender's sidecar and again in the receiver's.

Send (in order): the agent's own identity token must be valid (an expired one would only get
the message dead-lettered by the receiver: ``503 credentials_expired`` instead) → authorize by
policy rules → rate limits → DLP (block, redact, log) over everything of the message that the
receiver reads and the agent chose (payload, type, correlation id, trace context) → the
target's circuit breaker → sign with the agent's key (Ed25519; the token travels along) → one
write of the message plus its audit entry. Every refusal is audited and raised as a
:class:`~mas_sidecar.errors.Refusal` with its own error code, a reason and, where waiting helps,
how long to wait (the API answers it); nothing refused reaches Redis.

Receive: the envelope must come from its sender's own stream (``misaddressed`` otherwise),
authenticate (anchor → token → signature; required unless the sender's policy waives signing),
refuse replays (:mod:`mas_sidecar.checks.replay`), and re-check authorization with the sender's
policy and verified roles — so a forged, altered, replayed, re-injected or unauthorized message
written around the sender's sidecar is refused (the inbox dead-letters it) and audited. What
passes is audited too (one ``received`` entry for the messages read together), for
cross-verification with the senders' trails.

External principals (inbound A2A, :mod:`mas_sidecar.api.a2a`): a sidecar that authenticated
an external client sends that client's call to its own agent, signed with its own key, with the
envelope's ``principal`` set to ``external/<client>``. Both sides then authorize the principal,
not the sidecar's agent (with no roles: rules name it by id); on receive, a principal is
believed only from the agent's own sidecar, so no other agent can speak for an external client.

External agents (outbound A2A, :mod:`mas_sidecar.remote`): a message to an ``ExternalAgent``
gets every send check here (to :meth:`Destination.remote_of`: only its audit entry is written,
the remote agent is called over A2A instead); the remote's outcome feeds the target's breaker
(:meth:`Gateway.remote_succeeded`; :meth:`Gateway.remote_failed` also audits the failure), and
its answer gets the checks that apply on receive (:meth:`Gateway.check_answer`: DLP, then the
``received`` audit entry).

Replies are authorized too, and deny wins for them as for anything else. The one thing a reply
gets that other messages do not: the reply to a synchronous request needs no allow rule, since
the request it answers was allowed — but only the one reply that the requesting replica is
waiting for, from the agent it asked (its reply stream's reader says which, see
:mod:`mas_sidecar.streams.replies`). A reply to a plain message, or one that arrives in an inbox, is
authorized like any message: setting ``is_reply`` grants nothing.

Token expiry is judged at the time Redis accepted the entry (its id's timestamp), so messages
that waited while this agent was down still verify after their token expired. Only the sender
writes its stream, so only it can move that time, for its own messages.

Dead-letter replay (:meth:`Gateway.replay_refusal`): the receiver cannot sign for the sender, so
a dead letter goes back to its sender's stream only if it authenticates now, as a new entry
would; one that no longer does (its sender's token expired since, or was expired when it was
signed) is refused, and its sender has to send it again.

Used by the outbox (send), the inbox (receive) and the dead-letter store (replay).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from mas_core.envelope import ENTRY_FIELD, Envelope
from mas_core.error_codes import ErrorCode
from mas_core.identity.tokens import (
    IdentityError,
    TokenClaims,
    UnsignedEnvelopeError,
    sign_envelope,
)
from mas_core.keys import AgentKeys
from mas_core.policy.document import EffectivePolicy
from mas_core.policy.rules import Decision, Party, authorize
from mas_sidecar.checks.audit_log import AuditLog, decision_event, receipt_event
from mas_sidecar.checks.breaker import Breakers
from mas_sidecar.checks.credentials import CredentialStore
from mas_sidecar.checks.dlp import redaction
from mas_sidecar.checks.policy_store import PolicyStore
from mas_sidecar.checks.ratelimit import RateLimiter
from mas_sidecar.checks.replay import Read, ReplayError, ReplayGuard, entry_time_ms
from mas_sidecar.errors import Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.errors import REDIS_ERRORS
from mas_sidecar.streams.registry import Registry
from mas_sidecar.streams.writer import Append, Discovery, Writer

# Replies to synchronous requests are read within milliseconds; this bound only keeps a reply
# stream whose replica stopped reading from growing (the replica sets the stream's expiry).
REPLY_STREAM_MAXLEN = 10_000
DECISION_CACHE_SIZE = 4096
REPLY_GRANT = "reply-to-request"  # the audit's ``rule`` for a reply no rule allows explicitly


def permits(decision: Decision, answers_request: bool) -> bool:
    """Whether a message may go: allowed by a rule, or the reply to a synchronous request that
    no rule denies (nothing matched, rather than a deny rule)."""
    return decision.allowed or (answers_request and decision.rule is None)


# Identifiers among the parts of a message its receiver reads: DLP never rewrites them (the
# type is what authorization matched, a correlation id what the sender matches replies by), so
# data a detector would redact there refuses the message.
_IDENTIFIERS = frozenset({"type", "correlation_id"})


@dataclass(frozen=True)
class Destination:
    """Where an admitted envelope is written: this sender's stream into the target (which also
    makes the sender known to the target), or its reply stream to the replica that waits."""

    key: str
    inbox: bool
    discovery: Discovery | None = None
    remote: bool = False  # an external agent's: nothing is appended but the audit entry

    @classmethod
    def inbox_of(cls, target: str, sender: str) -> Destination:
        """``sender``'s stream into ``target``."""
        keys = AgentKeys(target)
        return cls(keys.inbox(sender), True, Discovery(keys.senders, keys.ring, sender))

    @classmethod
    def replica_of(cls, requester: str, replica: str, sender: str) -> Destination:
        """``sender``'s reply stream to ``requester``'s ``replica``."""
        return cls(AgentKeys(requester).replies(replica, sender), False)

    @classmethod
    def remote_of(cls, target: str) -> Destination:
        """External agent ``target``, called over A2A once the checks passed."""
        return cls(target, False, remote=True)

    def append(self, entry: bytes) -> Append:
        """The append of ``entry``. A reply goes only into a reply stream that exists: its
        replica creates it (with an expiry) before it asks, so a reply to a replica that
        stopped waiting long ago creates no key that never expires."""
        if self.inbox:
            return Append(self.key, (ENTRY_FIELD, entry), measure=True, discovery=self.discovery)
        return Append(self.key, (ENTRY_FIELD, entry), REPLY_STREAM_MAXLEN, existing_only=True)


class Gateway:
    """The checks of one sidecar."""

    def __init__(
        self,
        *,
        agent_id: str,
        roles: frozenset[str],
        credentials: CredentialStore | None,
        replay: ReplayGuard,
        policies: PolicyStore,
        registry: Registry,
        limiter: RateLimiter,
        breakers: Breakers,
        audit: AuditLog,
        writer: Writer,
        metrics: Metrics,
    ) -> None:
        self.agent_id = agent_id
        self.roles = roles
        self._credentials = credentials
        self._replay = replay
        self._policies = policies
        self._registry = registry
        self._limiter = limiter
        self._breakers = breakers
        self._audit = audit
        self._writer = writer
        self._metrics = metrics
        self._decisions: dict[tuple[str, Party, Party, str], Decision] = {}

    async def send(
        self, envelope: Envelope, destination: Destination, *, answers_request: bool = False
    ) -> Envelope:
        """Run every check on ``envelope``, then write it; the envelope as written."""
        written, done = await self.admit(envelope, destination, answers_request=answers_request)
        await done
        return written

    async def admit(
        self, envelope: Envelope, destination: Destination, *, answers_request: bool = False
    ) -> tuple[Envelope, asyncio.Future[list[Any]]]:
        """Run every check on ``envelope`` and queue its write: the envelope as it will be
        written, and the write's future (it raises like the write; it counts as sent only once
        it resolves). Admitting several before awaiting any puts them in one pipeline.
        ``answers_request``: the envelope is the reply to a synchronous request delivered here,
        which needs no allow rule (a deny rule still refuses it). Times the ``checks`` stage
        (from here until the write is queued) and, once Redis answers, ``redis_write``."""
        started = time.perf_counter()
        policy = self._policies.enforced()
        if self._credentials is not None:
            unusable = self._credentials.unusable()
            if unusable is not None:
                await self._refuse(
                    "credentials_expired", envelope, ErrorCode.CREDENTIALS_EXPIRED,
                    f"{unusable}: nothing is sent until renewed credentials are loaded "
                    "(receivers would refuse the message)",
                    retry_after=1,
                )  # fmt: skip
        details: dict[str, Any] = {"policy_revision": policy.revision}
        target = Party(envelope.target, await self._registry.capabilities_of(envelope.target))
        if envelope.principal is not None and envelope.target != self.agent_id:
            raise Refusal(ErrorCode.FORBIDDEN, "an external principal may call this agent only")
        sender = (
            Party(envelope.principal)
            if envelope.principal is not None
            else Party(self.agent_id, self.own_roles())
        )
        decision = self._authorize(policy, sender, target, envelope.type)
        if not permits(decision, answers_request):
            self._metrics.count_rule("denied", decision.rule)
            await self._refuse("denied", envelope, ErrorCode.FORBIDDEN, decision.reason)
        details["rule"] = decision.rule if decision.allowed else REPLY_GRANT
        limited = await self._limiter.check(policy.rate_limits, envelope.principal)
        if limited is not None:
            limit, wait = limited
            self._metrics.count_rule("rate_limited", limit.name)
            await self._refuse(
                "rate_limited", envelope, ErrorCode.RATE_LIMITED,
                f"rate limit {limit.name} ({limit.rate:g}/s, burst {limit.burst}) exceeded",
                wait,
            )  # fmt: skip
        envelope = await self._scan(envelope, details)
        if destination.inbox or destination.remote:
            settings = policy.circuit_breaker
            live = not settings.when_not_live or await self._registry.is_live(envelope.target)
            opened = self._breakers.check(envelope.target, settings, live)
            if opened is not None:
                wait, reason = opened
                await self._refuse(
                    "circuit_open", envelope, ErrorCode.CIRCUIT_OPEN,
                    f"circuit to {envelope.target} is open: {reason}", wait,
                )  # fmt: skip
        if self._credentials is not None:
            credentials = self._credentials
            envelope = sign_envelope(envelope, credentials.signing_key, credentials.token)
        elif policy.signing_required:
            await self._refuse(
                "unsigned", envelope, ErrorCode.CREDENTIALS_UNAVAILABLE,
                "the gateway policy requires signed messages and this sidecar has no credentials",
            )  # fmt: skip
        await self._audit.prepare()
        done = self._queue_write(envelope, destination, policy, details)
        self._metrics.observe_stage("checks", time.perf_counter() - started)
        return envelope, done

    def _authorize(
        self, policy: EffectivePolicy, sender: Party, target: Party, message_type: str
    ) -> Decision:
        """:func:`~mas_core.policy.rules.authorize`, remembered per policy revision: the decision
        depends only on the sender's policy (revision and sender id), both parties and the
        type, so repeated traffic skips the glob matching."""
        key = (policy.revision, sender, target, message_type)
        decision = self._decisions.get(key)
        if decision is None:
            if len(self._decisions) >= DECISION_CACHE_SIZE:
                self._decisions.clear()
            decision = self._decisions[key] = authorize(policy.rules, sender, target, message_type)
        return decision

    def own_roles(self) -> frozenset[str]:
        """This agent's roles: from its verified token when it has one, else configured."""
        if self._credentials is not None:
            return frozenset(self._credentials.claims.roles)
        return self.roles

    async def _scan(self, envelope: Envelope, details: dict[str, Any]) -> Envelope:
        """DLP over every part of the message its receiver reads: refused (audited, with the
        type masked), or the envelope with its payload and trace context redacted as the policy
        says."""
        scanner = self._policies.scanner
        if scanner is None:
            return envelope
        result = scanner.scan_parts(_readable(envelope), fixed=_IDENTIFIERS)
        self._metrics.count_findings(result.findings)
        findings = [finding.record() for finding in result.findings]
        if result.refusal is not None:
            audited = envelope  # the audit entry must not hold what the type was refused for
            in_type = [f.detector for f in result.findings if f.path == "type"]
            if in_type:
                audited = envelope.model_copy(update={"type": redaction(in_type[0])})
            await self._refuse(
                "dlp_blocked", audited, ErrorCode.DLP_BLOCKED, result.refusal, dlp=findings
            )
        if result.findings:
            details["dlp"] = findings
            envelope = envelope.model_copy(update=result.redacted)
        return envelope

    def _queue_write(
        self,
        envelope: Envelope,
        destination: Destination,
        policy: EffectivePolicy,
        details: dict[str, Any],
    ) -> asyncio.Future[list[Any]]:
        """Hand the message and its audit entry to the writer; the breaker and the metrics
        learn the outcome when the pipeline answers."""
        event = decision_event("accepted", envelope, **details)
        if policy.audit.payloads == "redacted" and self._policies.scanner is not None:
            event["payload"] = envelope.payload
        audit, head = self._audit.append(event)
        if destination.remote:
            done = self._writer.submit([audit], head)
        else:
            append = destination.append(envelope.to_entry()[ENTRY_FIELD])
            done = self._writer.submit([append, audit], head)
        queued = time.perf_counter()
        inbox, target, settings = destination.inbox, envelope.target, policy.circuit_breaker
        rule = details["rule"]

        def written(future: asyncio.Future[list[Any]]) -> None:
            if future.cancelled():
                return
            failure = future.exception()
            if failure is None:
                self._metrics.observe_stage("redis_write", time.perf_counter() - queued)
                if inbox:  # the first answer: this sender's backlog at the target
                    self._breakers.record(target, settings, True, int(future.result()[0]))
                self._metrics.decisions.labels("accepted").inc()
                self._metrics.count_rule("accepted", rule)
            elif isinstance(failure, REDIS_ERRORS):
                self._audit.needs_resync()
                if inbox:
                    self._breakers.record(target, settings, ok=False)

        done.add_done_callback(written)
        return done

    def remote_succeeded(self, envelope: Envelope) -> None:
        """External agent ``envelope.target`` answered: its breaker learns it."""
        settings = self._policies.enforced().circuit_breaker
        self._breakers.record(envelope.target, settings, ok=True)

    async def remote_failed(
        self, envelope: Envelope, reason: str, code: ErrorCode = ErrorCode.REMOTE_UNAVAILABLE
    ) -> NoReturn:
        """The call of external agent ``envelope.target`` failed: its breaker counts it, the
        failure is audited (``remote_failed``) and raised as a Refusal with ``code``."""
        settings = self._policies.enforced().circuit_breaker
        self._breakers.record(envelope.target, settings, ok=False)
        await self._refuse("remote_failed", envelope, code, f"{envelope.target}: {reason}")

    async def check_answer(self, answer: Envelope) -> Envelope:
        """The receive checks that apply to an external agent's answer: DLP (a block refused and
        audited), then the ``received`` audit entry; the answer as the agent gets it."""
        answer = await self._scan(answer, {})
        await self._audit.record(receipt_event(self.agent_id, [answer]))
        return answer

    async def _refuse(
        self,
        decision: str,
        envelope: Envelope,
        code: ErrorCode,
        reason: str,
        retry_after: float | None = None,
        **details: Any,
    ) -> NoReturn:
        self._metrics.decisions.labels(decision).inc()
        await self._audit.record(decision_event(decision, envelope, reason=reason, **details))
        raise Refusal(code, reason, retry_after)

    async def check_receive_many(
        self,
        reads: Sequence[Read],
        answers_request: Callable[[Envelope], bool] = lambda _: False,
    ) -> list[str | None]:
        """Per entry read together: why the receiver refuses it, or None.

        Each entry gets every check on its own; only the replay guard's Redis call is shared
        by the batch (one function call instead of one round trip per message). When every
        entry would pass but for the replay guard, that call also appends the receipt, unless
        the guard refuses an entry (then the refusals and the receipt of the others are
        recorded as they would have been without it). An envelope must
        come from its sender's own stream: one of another agent, re-injected by the agent whose
        stream it was read from, is refused (``misaddressed``) whatever its signature.
        ``answers_request(envelope)`` says whether an envelope is the reply a pending
        synchronous request of this replica waits for (it then needs no allow rule). Times the
        ``verify`` stage: the whole call, each entry its share.
        """
        started = time.perf_counter()
        refusals: list[str | None] = [None] * len(reads)
        verified: list[tuple[int, EffectivePolicy, TokenClaims | None]] = []
        for index, (envelope, _, sender, entry_id) in enumerate(reads):
            if envelope.sender != sender:
                refusals[index] = await self._refuse_received(
                    envelope, f"misaddressed: from {envelope.sender} in the stream of {sender}"
                )
                continue
            policy = self._policies.for_sender(envelope.sender)
            if policy is None:
                refusals[index] = await self._refuse_received(
                    envelope, "no gateway policy is loaded"
                )
                continue
            try:
                claims = self._authenticate(
                    envelope, entry_time_ms(entry_id) / 1000, policy.signing_required
                )
            except IdentityError as exc:
                refusals[index] = await self._refuse_received(envelope, f"unauthenticated: {exc}")
                continue
            verified.append((index, policy, claims))
        signed = [index for index, _, claims in verified if claims is not None]
        checked = [reads[i] for i in signed]
        replays: dict[int, ReplayError | None] | None = None
        if self._receipt_with_replay_check(reads, verified, answers_request):
            # Every message passes but for the replay guard (the usual case): its function call
            # also appends the receipt, unless it refuses one. One round trip, not two.
            receipt = receipt_event(self.agent_id, [read.envelope for read in reads])
            errors, appended = await self._replay.check_and_receipt(checked, self._audit, receipt)
            if appended:
                self._metrics.observe_stage("verify", time.perf_counter() - started, len(reads))
                return refusals
            replays = dict(zip(signed, errors, strict=True))
        if replays is None:
            replays = dict(zip(signed, await self._replay.check_many(checked), strict=True))
        for index, policy, claims in verified:
            envelope = reads[index].envelope
            replay = replays.get(index)
            if replay is not None:
                refusals[index] = await self._refuse_received(envelope, f"replay: {replay}")
            else:
                refusals[index] = await self._authorize_received(
                    envelope, policy, claims, answers_request(envelope)
                )
        passed = [
            reads[index].envelope for index, refusal in enumerate(refusals) if refusal is None
        ]
        if passed:
            await self._audit.record(receipt_event(self.agent_id, passed))
        self._metrics.observe_stage("verify", time.perf_counter() - started, len(reads))
        return refusals

    def _receipt_with_replay_check(
        self,
        reads: Sequence[Read],
        verified: Sequence[tuple[int, EffectivePolicy, TokenClaims | None]],
        answers_request: Callable[[Envelope], bool],
    ) -> bool:
        """Whether the receipt of ``reads`` may go with the replay guard's call: every message
        authenticated with its claims and would be authorized (known without a round trip;
        this decides nothing and records nothing), the writer waits for no replicas, and it is
        idle: no other entry is chained until the call answers, so a busy sidecar's sends would
        wait for a pipeline more (under load the two calls are shared by more messages)."""
        if self._writer.replicated or not self._writer.idle or len(verified) != len(reads):
            return False
        own = Party(self.agent_id, frozenset(self._registry.capabilities))
        for index, policy, claims in verified:
            if claims is None:
                return False
            envelope = reads[index].envelope
            if envelope.principal is not None:
                return False
            sender = Party(envelope.sender, frozenset(claims.roles))
            decision = self._authorize(policy, sender, own, envelope.type)
            if not permits(decision, answers_request(envelope)):
                return False
        return True

    async def _authorize_received(
        self,
        envelope: Envelope,
        policy: EffectivePolicy,
        claims: TokenClaims | None,
        answers_request: bool,
    ) -> str | None:
        if envelope.principal is not None:
            if envelope.sender != self.agent_id:
                return await self._refuse_received(
                    envelope, "unauthorized: only an agent's own sidecar calls it for an external "
                    f"principal, not {envelope.sender}",
                )  # fmt: skip
            sender = Party(envelope.principal)
        else:
            roles = claims.roles if claims else await self._registry.roles_of(envelope.sender)
            sender = Party(envelope.sender, frozenset(roles))
        decision = self._authorize(
            policy,
            sender,
            Party(self.agent_id, frozenset(self._registry.capabilities)),
            envelope.type,
        )
        if permits(decision, answers_request):
            return None
        return await self._refuse_received(envelope, f"unauthorized: {decision.reason}")

    def replay_refusal(self, envelope: Envelope) -> str | None:
        """Why the receive checks would refuse ``envelope`` as unauthenticated if it entered
        the inbox now, or None: asked before a dead letter is put back in the inbox.

        The receiver cannot sign for the sender, and a token is judged at the time the entry
        reaches the inbox, so a dead letter whose token has expired since can never pass
        again; and judging it at its ``created_at`` instead would trust a time the signer
        chose (anyone holding a leaked agent key and an old token could backdate messages).
        """
        policy = self._policies.for_sender(envelope.sender)
        if policy is None:
            raise Refusal(
                ErrorCode.POLICY_UNAVAILABLE,
                f"no gateway policy for {envelope.sender} is loaded yet; replay later",
                1,
            )
        try:
            self._authenticate(envelope, time.time(), policy.signing_required)
        except IdentityError as exc:
            return f"unauthenticated: {exc}"
        return None

    def _authenticate(self, envelope: Envelope, at: float, required: bool) -> TokenClaims | None:
        """The sender's verified claims; None for an unsigned message the policy tolerates.

        The token's validity is judged at ``at`` (seconds): on receive, the time Redis accepted
        the entry (see the module docstring).
        """
        signed = envelope.signature is not None or envelope.token is not None
        if not signed and not required:
            return None
        if self._credentials is None:
            raise UnsignedEnvelopeError(
                "this sidecar has no trust anchors to verify signed messages with"
            )
        return self._credentials.verifier.authenticate(envelope, now=at)

    async def _refuse_received(self, envelope: Envelope, reason: str) -> str:
        self._metrics.decisions.labels("refused_on_receive").inc()
        await self._audit.record(decision_event("refused_on_receive", envelope, reason=reason))
        return reason


def _readable(envelope: Envelope) -> dict[str, Any]:
    """The parts of ``envelope`` its receiver reads that the sending agent chose (the sidecar
    sets the rest: ids, sender, times), named as the envelope's fields."""
    parts: dict[str, Any] = {"payload": envelope.payload, "type": envelope.type}
    if envelope.correlation_id is not None:
        parts["correlation_id"] = envelope.correlation_id
    if envelope.trace:
        parts["trace"] = envelope.trace
    return parts

"""The agent base class: typed handlers per message type, typed persisted state, lifecycle.

Agent programs subclass :class:`Agent`, register handlers with :meth:`Agent.on` and call
:meth:`Agent.run`. The agent talks only to its sidecar (:class:`mas.SidecarClient`): it
subscribes to deliveries, runs handlers concurrently and settles each delivery by the outcome:

- the handler returns: ack (with how long it took, for the sidecar's ``mas_handler_seconds``);
- the handler raises, or runs past its ``timeout`` (it is cancelled): the delivery is nacked
  with a backoff delay, so it comes back with ``attempt`` + 1 (the sidecar dead-letters it after
  its attempt limit, ``MAS_MAX_ATTEMPTS``);
- the payload fails the handler's model, or no handler exists for the type: reject, which
  dead-letters the message at once with the reason;
- the delivery's lease is lost while the handler runs (:mod:`mas.leases`): the handler is
  cancelled, ``message.lease_lost`` is set, and the delivery is neither acked nor nacked (it is
  delivered again, maybe elsewhere).

While a handler runs, its lease is renewed (all running handlers' leases in one request every
third of the lease), so a handler may think for minutes without its message being delivered a
second time. A handler registered with ``idempotent=True`` is run at most once per message
while its record lasts: the agent records the message as handled before it acks it, and a
message redelivered after that (the agent died between the two) is acked without running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, cast

import aiohttp
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import TypeVar

from mas.client import SidecarClient
from mas.errors import LeaseLostError, MasError, RevisionConflictError
from mas.leases import LeaseKeeper
from mas.message import AgentMessage
from mas.retry import RetryOption
from mas_core.telemetry import tracing
from mas_core.telemetry.tracing import Tracer

logger = logging.getLogger("mas.agent")

HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[None]])

_HANDLER_MARK = "__mas_handler__"
_MAX_REASON_CHARS = 1000
_MAX_STATE_RETRIES = 20
_RECONNECT_INITIAL_S = 0.1
_RECONNECT_MAX_S = 5.0
DEFAULT_IDEMPOTENCY_TTL = 24 * 3600.0  # seconds an idempotent handler remembers a message
# What a lost connection to the sidecar looks like; the delivery loop rides these out.
_SIDECAR_ERRORS = (MasError, aiohttp.ClientError, TimeoutError)


class EmptyState(BaseModel):
    """The state model of an agent that declares none."""


# A bare ``Agent`` (no state model) is ``Agent[EmptyState]``.
StateT = TypeVar("StateT", bound=BaseModel, default=EmptyState)


class AgentInfo(BaseModel):
    """A live agent as listed by discovery."""

    id: str
    capabilities: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Handler:
    """A registered handler: its message type, the method's name (resolved per instance), its
    payload model, its timeout (seconds) and, when idempotent, how long (ms) it remembers."""

    message_type: str
    model: type[BaseModel] | None
    timeout: float | None
    remember_ms: int | None
    attribute: str = ""


def nack_delay_ms(attempt: int) -> int:
    """The redelivery delay after a failed ``attempt``: 200 ms doubling, at most 10 s."""
    return int(min(200 * 2 ** max(attempt - 1, 0), 10_000))


def validation_summary(error: ValidationError) -> str:
    """A one-line summary of a validation error: ``location: message`` per problem."""
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '<payload>'}: {item['msg']}"
        for item in error.errors()
    ]
    return f"{error.error_count()} validation error(s) for {error.title}: " + "; ".join(problems)


class Agent(Generic[StateT]):
    """Base class of agent programs; see the module documentation for delivery outcomes."""

    _handlers: ClassVar[dict[str, _Handler]] = {}

    def __init__(
        self,
        *,
        state_model: type[StateT] | None = None,
        sidecar_url: str | None = None,
        sidecar_token: str | None = None,
        concurrency: int = 16,
        stop_timeout: float = 30.0,
        startup_timeout: float = 60.0,
        tracer: Tracer | None = None,
    ) -> None:
        """``sidecar_url`` and ``sidecar_token`` default to what the control plane gives the
        agent process (``MAS_SIDECAR_URL``; ``MAS_SIDECAR_TOKEN`` or the file
        ``MAS_SIDECAR_TOKEN_FILE`` names, see :class:`mas.SidecarClient`). ``tracer``
        defaults to what the ``OTEL_*`` variables ask for (no spans when they ask for none,
        see :mod:`mas_core.telemetry.tracing`; the service name defaults to the agent's id)."""
        self._tracer = tracer
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._state_model = cast(type[StateT], state_model or EmptyState)
        self._sidecar_url = sidecar_url
        self._sidecar_token = sidecar_token
        self._stop_timeout = stop_timeout
        self._startup_timeout = startup_timeout
        self._client: SidecarClient | None = None
        self._leases: LeaseKeeper | None = None
        self._id: str | None = None
        self._state: StateT | None = None
        self._revision = 0
        self._state_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._consumer: asyncio.Task[None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, _Handler] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if not inspect.isfunction(value):
                    continue
                mark: _Handler | None = getattr(value, _HANDLER_MARK, None)
                if mark is not None:
                    handlers[mark.message_type] = replace(mark, attribute=attribute)
        cls._handlers = handlers

    @staticmethod
    def on(
        message_type: str,
        *,
        model: type[BaseModel] | None = None,
        timeout: float | None = None,
        idempotent: bool = False,
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
    ) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated method as the handler of ``message_type`` messages.

        With ``model`` the handler is called as ``handler(self, message, payload)``, the payload
        validated into ``model`` (a payload that fails is dead-lettered); without, as
        ``handler(self, message)``. A subclass may register its own handler for a type.

        The delivery's lease is renewed while the handler runs, however long. ``timeout``
        (seconds) bounds that: a handler still running then is cancelled
        (``asyncio.CancelledError`` at its current ``await``) and the message nacked, to come
        back after a backoff with ``attempt`` + 1 and be dead-lettered after the sidecar's
        ``MAS_MAX_ATTEMPTS``, as when the handler raises. :meth:`AgentMessage.extend` gives a
        running handler more time.

        ``idempotent``: before running, the agent asks its sidecar whether the message was
        handled already, and acks it without running if so; after the handler returned, it
        records the message as handled (for ``idempotency_ttl`` seconds, a day by default)
        before it acks. So a message redelivered because the agent died between its side
        effects and its ack does not run again. (A handler that dies *before* returning runs
        again: at-least-once.)
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if idempotency_ttl <= 0:
            raise ValueError("idempotency_ttl must be positive")
        mark = _Handler(
            message_type,
            model,
            timeout,
            max(1, int(idempotency_ttl * 1000)) if idempotent else None,
        )

        def register(handler: HandlerT) -> HandlerT:
            setattr(handler, _HANDLER_MARK, mark)
            return handler

        return register

    # Hooks

    async def on_start(self) -> None:
        """Called by :meth:`start` once state is loaded and metadata published, before any
        handler runs."""

    async def on_stop(self) -> None:
        """Called by :meth:`stop` after the last handler finished, before the client closes."""

    def get_metadata(self) -> dict[str, Any]:
        """Metadata published in discovery at start. The default, ``{}``, publishes nothing and
        leaves the sidecar's configured metadata in place."""
        return {}

    # Public API

    @property
    def id(self) -> str:
        """The full ``namespace/name`` id of this agent (known once started)."""
        if self._id is None:
            raise MasError("the agent is not started")
        return self._id

    @property
    def state(self) -> StateT:
        """The agent's state as last loaded or written (known once started)."""
        if self._state is None:
            raise MasError("the agent is not started")
        return self._state

    async def start(self) -> None:
        """Load identity and state, publish metadata, run :meth:`on_start`, take deliveries."""
        if self._client is not None:
            raise MasError("the agent is already started")
        client = SidecarClient(self._sidecar_url, token=self._sidecar_token)
        self._client = client
        self._leases = LeaseKeeper(client)
        try:
            self._id = str((await self._first_contact(client))["id"])
            if self._tracer is None:
                self._tracer = tracing.from_environment(self._id, {"mas.agent.id": self._id})
            client.tracer = self._tracer
            await self._reload_state()
            metadata = self.get_metadata()
            if metadata:
                await client.set_metadata(metadata)
            await self.on_start()
        except BaseException:
            self._client = None
            await client.aclose()
            raise
        self._consumer = asyncio.create_task(self._consume(), name=f"mas-deliveries-{self._id}")

    async def _first_contact(self, client: SidecarClient) -> dict[str, Any]:
        """The sidecar's ``/v1/self``, waiting while it is not up yet (in a pod, the agent's
        container may start before the sidecar's), up to ``startup_timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout
        delay = _RECONNECT_INITIAL_S
        while True:
            try:
                return await client.self_info()
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if loop.time() + delay > deadline:
                    raise MasError(
                        f"no sidecar at {client.base_url} within {self._startup_timeout:g} s: {exc}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)

    async def stop(self) -> None:
        """Stop taking deliveries, wait for running handlers (up to ``stop_timeout``, then
        cancel them: their deliveries are redelivered), run :meth:`on_stop`, close the client."""
        client = self._client
        if client is None:
            return
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._leases is not None:
            await self._leases.aclose()
        try:
            await self.on_stop()
        finally:
            self._client = None
            await client.aclose()

    def run(self) -> None:
        """Run the agent until SIGINT or SIGTERM: what an agent program's ``main`` calls."""
        logging.basicConfig(
            level=os.environ.get("MAS_LOG_LEVEL", "INFO").upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self._run_until_signalled())

    async def send(
        self,
        to: str,
        type: str,
        payload: Any = None,
        *,
        correlation_id: str | None = None,
        ttl_ms: int | None = None,
        retry: RetryOption = None,
    ) -> str:
        """Send a message to agent ``to`` (``name`` or ``namespace/name``); its id.

        ``retry`` (off by default): send again after a :class:`mas.errors.RateLimitedError` or
        :class:`mas.errors.CircuitOpenError` — a :class:`mas.retry.Retry`, or a number of more
        tries (see :meth:`mas.SidecarClient.send`).
        """
        return await self._sidecar().send(
            to, type, payload, correlation_id=correlation_id, ttl_ms=ttl_ms, retry=retry
        )

    async def request(
        self,
        to: str,
        type: str,
        payload: Any = None,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the sidecar waits, not a local await
        retry: RetryOption = None,
    ) -> AgentMessage:
        """Send a message and wait up to ``timeout`` seconds for the reply.

        Raises :class:`mas.errors.RequestTimeoutError` when none arrives in time. ``retry`` as
        for :meth:`send`. Progress reports of the handler (:meth:`AgentMessage.progress`) are
        not passed on: this returns the reply only.
        """
        reply = await self._sidecar().request(
            to, type, payload, timeout_ms=int(timeout * 1000), retry=retry
        )
        return AgentMessage.from_reply(reply)

    async def update_state(self, changes: dict[str, Any] | StateT) -> None:
        """Apply ``changes`` (some fields, or a whole new state) and persist the result.

        The new state is validated first: an invalid change raises
        :class:`pydantic.ValidationError` and changes nothing. The write is conditional on the
        revision this agent knows; when another writer (e.g. another replica) got there first,
        the state is reloaded and the same changes applied to it again.
        """
        client = self._sidecar()
        async with self._state_lock:
            for _ in range(_MAX_STATE_RETRIES):
                new_state = self._apply(changes)
                try:
                    document, revision = await client.put_state(
                        new_state.model_dump(mode="json"), self._revision
                    )
                except RevisionConflictError:
                    await self._reload_state()
                    continue
                self._state = self._state_model.model_validate(document)
                self._revision = revision
                return
            raise MasError(f"state write lost {_MAX_STATE_RETRIES} revision races in a row")

    async def discover(self, capabilities: Sequence[str] = ()) -> list[AgentInfo]:
        """Live agents having every one of ``capabilities`` (all live agents when empty)."""
        agents = await self._sidecar().discover(capabilities)
        return [AgentInfo.model_validate(agent) for agent in agents]

    # Internals

    def _sidecar(self) -> SidecarClient:
        if self._client is None:
            raise MasError("the agent is not started")
        return self._client

    async def _reload_state(self) -> None:
        document, revision = await self._sidecar().get_state()
        self._state = self._state_model.model_validate(document)
        self._revision = revision

    def _apply(self, changes: dict[str, Any] | StateT) -> StateT:
        """The current state with ``changes`` applied, validated against the state model."""
        if isinstance(changes, BaseModel):
            return self._state_model.model_validate(changes.model_dump())
        extra = self._state_model.model_config.get("extra")
        unknown = [key for key in changes if key not in self._state_model.model_fields]
        if unknown and extra != "allow":
            raise ValidationError.from_exception_data(
                self._state_model.__name__,
                [
                    {"type": "extra_forbidden", "loc": (key,), "input": changes[key]}
                    for key in unknown
                ],
            )
        return self._state_model.model_validate({**self.state.model_dump(), **changes})

    async def _run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        try:
            await self.start()
            logger.info("agent %s started", self.id)
            try:
                await stopping.wait()
            finally:
                await self.stop()
                logger.info("agent %s stopped", self._id)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def _consume(self) -> None:
        """Take deliveries for as long as the agent runs, resubscribing when the stream drops."""
        client = self._sidecar()
        loop = asyncio.get_running_loop()
        delay = _RECONNECT_INITIAL_S
        while True:
            try:
                async with contextlib.aclosing(client.deliveries()) as deliveries:
                    async for document in deliveries:
                        delay = _RECONNECT_INITIAL_S
                        received = loop.time()
                        self._keeper().delivered_again(str(document.get("id")))
                        await self._slots.acquire()
                        task = asyncio.create_task(self._handle(client, document, received))
                        self._running.add(task)
                        task.add_done_callback(self._running.discard)
                logger.warning("the sidecar ended the delivery stream; resubscribing")
            except _SIDECAR_ERRORS as exc:
                logger.warning("delivery stream failed (%s); resubscribing in %.1fs", exc, delay)
            except Exception:
                logger.exception("delivery loop failed; resubscribing in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _handle(
        self, client: SidecarClient, document: dict[str, Any], received: float
    ) -> None:
        try:
            message = AgentMessage.from_delivery(document, client)
            attributes = {"messaging.system": "mas", "messaging.message.id": message.id}
            with client.tracer.span(
                f"process {message.type}", parent=message.trace, kind="consumer",
                attributes=attributes,
            ):  # fmt: skip
                await self._dispatch(client, message, received)
        except _SIDECAR_ERRORS as exc:
            logger.warning("could not settle delivery %s: %s", document.get("id"), exc)
        finally:
            self._slots.release()

    async def _dispatch(
        self, client: SidecarClient, message: AgentMessage, received: float
    ) -> None:
        """Run the handler for ``message`` and settle the delivery by its outcome."""
        handler = self._handlers.get(message.type)
        if handler is None:
            await client.reject(message.id, f"no handler for message type {message.type!r}")
            return
        method = getattr(self, handler.attribute)
        arguments: list[Any] = [message]
        if handler.model is not None:
            try:
                arguments.append(handler.model.model_validate(message.payload))
            except ValidationError as exc:
                reason = f"payload of {message.type!r} is invalid: {validation_summary(exc)}"
                await client.reject(message.id, reason[:_MAX_REASON_CHARS])
                return
        if not await self._still_leased(message, received):
            return
        if handler.remember_ms is not None and await client.is_completed(message.id):
            logger.info(
                "message %s (type %r) was handled already: acking it without running %s",
                message.id, message.type, handler.attribute,
            )  # fmt: skip
            await client.ack(message.id)
            return
        started = asyncio.get_running_loop().time()
        if not await self._run(handler, method, arguments, message):
            return
        handler_ms = (asyncio.get_running_loop().time() - started) * 1000
        if handler.remember_ms is not None:
            await client.record_completed(message.id, handler.remember_ms)
        await client.ack(message.id, handler_ms)

    async def _still_leased(self, message: AgentMessage, received: float) -> bool:
        """Whether the delivery is still this replica's: one that waited for a free handler
        slot past its first renewal is renewed now, and left alone if its lease is gone."""
        waited = asyncio.get_running_loop().time() - received
        if waited < message._lease.lease_ms / 3000:
            return True
        try:
            await message.extend()
        except LeaseLostError:
            logger.warning("delivery %s lost its lease while it waited for a handler", message.id)
            return False
        return True

    async def _run(
        self,
        handler: _Handler,
        method: Callable[..., Awaitable[None]],
        arguments: list[Any],
        message: AgentMessage,
    ) -> bool:
        """Run the handler with its lease renewed, within its timeout; whether it succeeded.
        One that failed or timed out is nacked here; one whose lease was lost is left alone."""
        lease = message._lease
        task = asyncio.current_task()
        deadline = asyncio.timeout(handler.timeout)
        lease.task, lease.deadline = task, deadline
        try:
            with self._keeper().holding(lease), self._sidecar().tracer.span(handler.attribute):
                async with deadline:
                    await method(*arguments)
        except asyncio.CancelledError:
            if task is None or not lease.lost.is_set():
                raise
            task.uncancel()
            return False
        except Exception as exc:
            if not lease.lost.is_set():
                await self._failed(handler, message, exc, timed_out=deadline.expired())
            return False
        finally:
            lease.task = lease.deadline = None
        if lease.lost.is_set():  # the handler went on after its cancellation
            if task is not None and task.cancelling():
                task.uncancel()
            return False
        return True

    async def _failed(
        self, handler: _Handler, message: AgentMessage, exc: Exception, *, timed_out: bool
    ) -> None:
        """Log a handler's failure (or timeout) and nack its message with a backoff."""
        delay_ms = nack_delay_ms(message.attempt)
        what = (message.id, message.type, message.attempt, delay_ms)
        if timed_out:
            logger.error(
                "handler %s ran past its timeout of %g s on message %s (type %r, attempt %d);"
                " redelivering in %d ms", handler.attribute, handler.timeout, *what,
            )  # fmt: skip
        else:
            logger.error(
                "handler %s failed on message %s (type %r, attempt %d); redelivering in %d ms",
                handler.attribute, *what, exc_info=exc,
            )  # fmt: skip
        await self._sidecar().nack(message.id, delay_ms)

    def _keeper(self) -> LeaseKeeper:
        if self._leases is None:
            raise MasError("the agent is not started")
        return self._leases


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else asyncio's default."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)

"""Traces across agents: spans of the SDK and of the sidecars, one trace per conversation.

A three-agent chain — the patient requests a diagnosis from the doctor, whose handler requests a
test from the lab — runs on real sidecars and a real Redis. With the SDK's spans kept in memory
(sidecars not tracing), the agents' spans form one trace through the trace context the
sidecars carry in the envelope. With every part exporting over OTLP/HTTP to a receiver on
loopback, the sidecars' spans join the same trace between the agents' spans. Without the
``OTEL_*`` variables nothing loads OpenTelemetry at all.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pytest
import redis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp import ReceivedSpan, otlp_receiver
from policies import publish
from waiting import eventually

from mas import Agent, AgentMessage, SidecarError
from mas_cli.local.processes import SidecarProcess
from mas_core.telemetry import tracing
from mas_core.telemetry.otel import OtelTracer
from mas_sidecar.config import SidecarConfig
from mas_sidecar.errors import ConfigError

if TYPE_CHECKING:
    from conftest import Sidecars

Edge = tuple[tuple[str, str], tuple[str, str] | None]  # (service, span) -> its parent


class Doctor(Agent):
    @Agent.on("diagnose")
    async def diagnose(self, message: AgentMessage) -> None:
        result = await self.request("lab", "test", {"sample": 1}, timeout=30)
        await message.reply("diagnosis", result.payload)


class Lab(Agent):
    @Agent.on("test")
    async def run_test(self, message: AgentMessage) -> None:
        await message.reply("result", {"ok": True})


def _agent(kind: type[Agent], sidecar: SidecarProcess, provider: TracerProvider) -> Agent:
    return kind(sidecar_url=sidecar.url, sidecar_token=sidecar.token, tracer=OtelTracer(provider))


async def _run_chain(
    sidecars: Sidecars,
    started: Callable[[Agent[Any]], Any],
    providers: dict[str, TracerProvider],
    **env: str,
) -> None:
    """Start the three agents (sidecar settings ``env``; each sidecar's service name is
    ``sidecar-<name>``) and let the patient ask for a diagnosis."""

    def sidecar(name: str) -> SidecarProcess:
        return sidecars.start(f"default/{name}", OTEL_SERVICE_NAME=f"sidecar-{name}", **env)

    await started(_agent(Lab, sidecar("lab"), providers["lab"]))
    await started(_agent(Doctor, sidecar("doctor"), providers["doctor"]))
    patient = await started(_agent(Agent, sidecar("patient"), providers["patient"]))
    reply = await patient.request("doctor", "diagnose", {"symptom": "cough"}, timeout=30)
    assert reply.payload == {"ok": True}


def _edges(spans: Iterable[ReceivedSpan]) -> Counter[Edge]:
    spans = list(spans)
    by_id = {span.span_id: (span.service, span.name) for span in spans}
    return Counter(((s.service, s.name), by_id.get(s.parent_id)) for s in spans)


# The agents' own spans: request -> (the receiver's) process -> handler -> request/reply, ack.
SDK_EDGES: Counter[Edge] = Counter(
    {
        (("patient", "request diagnose"), None): 1,
        (("doctor", "process diagnose"), ("patient", "request diagnose")): 1,
        (("doctor", "diagnose"), ("doctor", "process diagnose")): 1,
        (("doctor", "request test"), ("doctor", "diagnose")): 1,
        (("lab", "process test"), ("doctor", "request test")): 1,
        (("lab", "run_test"), ("lab", "process test")): 1,
        (("lab", "reply result"), ("lab", "run_test")): 1,
        (("lab", "ack"), ("lab", "process test")): 1,
        (("doctor", "reply diagnosis"), ("doctor", "diagnose")): 1,
        (("doctor", "ack"), ("doctor", "process diagnose")): 1,
    }
)


def _sidecar_request(agent: str, type: str) -> Counter[Edge]:
    """A request through the sidecar of ``agent``: its span under the agent's, and children."""
    span = (f"sidecar-{agent}", "request")
    return Counter(
        {
            (span, (agent, f"request {type}")): 1,
            **{((f"sidecar-{agent}", child), span): 1 for child in (*_WRITE, "reply wait")},
        }
    )


def _sidecar_reply(agent: str, type: str) -> Counter[Edge]:
    return Counter({((f"sidecar-{agent}", "reply"), (agent, f"reply {type}")): 1})


def _sidecar_receive(agent: str, sender: str) -> Counter[Edge]:
    """A message received by the sidecar of ``agent``: ``receive`` under the sender's sidecar
    span, with verify, deliver and ack under it."""
    span = (f"sidecar-{agent}", "receive")
    return Counter(
        {
            (span, (f"sidecar-{sender}", "request")): 1,
            **{((f"sidecar-{agent}", child), span): 1 for child in ("verify", "deliver", "ack")},
        }
    )


_WRITE = ("gateway checks", "redis write")
# Between them, the sidecars: the agent's process span hangs under its sidecar's receive span.
FULL_EDGES: Counter[Edge] = (
    SDK_EDGES
    - Counter(
        {
            (("doctor", "process diagnose"), ("patient", "request diagnose")): 1,
            (("lab", "process test"), ("doctor", "request test")): 1,
        }
    )
    + Counter(
        {
            (("doctor", "process diagnose"), ("sidecar-doctor", "receive")): 1,
            (("lab", "process test"), ("sidecar-lab", "receive")): 1,
        }
    )
    + _sidecar_request("patient", "diagnose")
    + _sidecar_receive("doctor", "patient")
    + _sidecar_request("doctor", "test")
    + _sidecar_receive("lab", "doctor")
    + _sidecar_reply("lab", "result")
    + _sidecar_reply("doctor", "diagnosis")
)


SSN = "123-45-6789"


async def test_no_span_holds_what_the_gateway_refused_a_message_for(
    sidecars: Sidecars, redis_client: redis.Redis
) -> None:
    publish(
        redis_client,
        rules=[{"name": "ok", "action": "allow", "types": ["ok*"]}],
        dlp={"detectors": {"us_ssn": "block"}},
    )
    with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        alice = sidecars.start("default/alice", **env)
        sidecars.start("default/bob", **env)
        async with alice.client() as client:
            refusals = []
            for type, payload in ((f"ssn-{SSN}", {}), (f"ok:{SSN}", {}), ("ok.x", {"n": SSN})):
                with pytest.raises(SidecarError) as refused:
                    await client.send("bob", type, payload)
                refusals.append(refused.value.code)
            assert refusals == ["forbidden", "dlp_blocked", "dlp_blocked"]
            await client.send("bob", "ok.fine", {})

        await eventually(
            lambda: sum(span.name == "send" for span in receiver.spans) == 4, "four send spans"
        )

    assert not [span.text for span in receiver.spans if SSN in span.text]
    failed = [span.text for span in receiver.spans if "STATUS_CODE_ERROR" in span.text]
    assert sum("forbidden" in text for text in failed) == 2  # send and its gateway checks
    assert sum("dlp_blocked" in text for text in failed) == 4


def _memory_providers(exporter: InMemorySpanExporter) -> dict[str, TracerProvider]:
    providers = {}
    for name in ("patient", "doctor", "lab"):
        provider = TracerProvider(resource=Resource({SERVICE_NAME: name}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers[name] = provider
    return providers


def _received(exporter: InMemorySpanExporter) -> list[ReceivedSpan]:
    return [
        ReceivedSpan(
            str(span.resource.attributes[SERVICE_NAME]),
            span.name,
            f"{span.context.trace_id:032x}",
            f"{span.context.span_id:016x}",
            f"{span.parent.span_id:016x}" if span.parent else "",
        )
        for span in exporter.get_finished_spans()
        if span.context is not None
    ]


async def test_the_sdk_continues_one_trace_across_a_chain_of_agents(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    exporter = InMemorySpanExporter()

    await _run_chain(sidecars, started, _memory_providers(exporter))

    spans = await eventually(
        lambda: (s := _received(exporter)) and len(s) >= SDK_EDGES.total() and s,
        "every agent span, the acks included",
    )
    assert len({span.trace_id for span in spans}) == 1
    assert _edges(spans) == SDK_EDGES


async def test_sidecars_and_agents_export_one_trace_over_otlp_http(
    sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    with otlp_receiver() as receiver:
        providers = {}
        for name in ("patient", "doctor", "lab"):
            provider = TracerProvider(resource=Resource({SERVICE_NAME: name}))
            exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
            providers[name] = provider
        await _run_chain(
            sidecars,
            started,
            providers,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="50",
        )

        await eventually(
            lambda: len(receiver.spans) >= FULL_EDGES.total(), "every span of the chain"
        )
        for provider in providers.values():
            await asyncio.to_thread(provider.shutdown)

    assert len({span.trace_id for span in receiver.spans}) == 1
    assert _edges(receiver.spans) == FULL_EDGES


# What tracing loads: the tracing SDK, the OTLP exporter and what it brings (protobuf,
# requests). redis-py 8 imports OpenTelemetry's API and metrics SDK by itself when they are
# installed, so those alone say nothing about mas.
TRACING_MODULES = (
    "mas_core.telemetry.otel",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "google.protobuf",
    "requests",
)


WITHOUT_OTEL = "import sys\nsys.modules['opentelemetry'] = None  # as if not installed\n"


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
        check=False,
    )  # fmt: skip


def _loaded_after(code: str, env: dict[str, str]) -> list[str]:
    """The modules of :data:`TRACING_MODULES` a fresh interpreter has loaded after ``code``."""
    loaded = f"sorted(m for m in sys.modules if m.startswith({TRACING_MODULES!r}))"
    result = _run(f"{code}\nimport sys\nprint(*{loaded}, sep='\\n')", env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


BUILD_SIDECAR = """
from mas_sidecar.api.app import build_app
from mas_sidecar.config import SidecarConfig
from mas_core.telemetry import tracing
import mas
config = SidecarConfig.build(agent_id="default/a", port=1, redis_url="redis://127.0.0.1:1")
build_app(config)
tracing.from_environment("agent")
"""
INSECURE = {"MAS_SIDECAR_INSECURE_NO_TOKEN": "true"}


def test_without_otel_variables_neither_sidecar_nor_sdk_loads_tracing() -> None:
    assert _loaded_after(BUILD_SIDECAR, INSECURE) == []


def test_with_an_otlp_endpoint_the_sidecar_loads_the_otlp_exporter() -> None:
    loaded = _loaded_after(
        BUILD_SIDECAR, {**INSECURE, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    )
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in loaded
    assert "mas_core.telemetry.otel" in loaded


def test_a_sidecar_asked_to_trace_without_the_otel_extra_stops_naming_it() -> None:
    code = WITHOUT_OTEL + (
        "from mas_sidecar.main import main\n"
        "sys.exit(main(['--agent-id', 'default/a', '--port', '1']))"
    )
    env = {**INSECURE, "MAS_REDIS_URL": "redis://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "otlp"}
    result = _run(code, env)
    assert result.returncode == 2
    assert "needs the otel extra: pip install 'mas[otel]'" in result.stderr


def test_an_agent_asked_to_trace_without_the_otel_extra_runs_without_spans() -> None:
    code = WITHOUT_OTEL + (
        "from mas_core.telemetry import tracing\n"
        "print(tracing.from_environment('default/a') is tracing.NO_TRACER)"
    )
    result = _run(code, {"OTEL_TRACES_EXPORTER": "otlp"})
    assert result.stdout.strip() == "True"
    assert "OpenTelemetry is not installed" in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'",
        ),
    ],
)
def test_tracing_settings_mas_cannot_honour_stop_the_sidecar_at_start(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        SidecarConfig.build(
            agent_id="default/a", port=1, redis_url="redis://127.0.0.1:1", env={**INSECURE, **env}
        )


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_the_otel_variables_decide_whether_and_where_spans_go(
    env: dict[str, str], exporter: str | None
) -> None:
    assert tracing.exporter_from(env) == exporter


def test_trace_id_is_read_from_a_w3c_traceparent() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert tracing.trace_id({"traceparent": parent}) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id({"traceparent": "garbage"}) is None
    assert tracing.trace_id({}) is None

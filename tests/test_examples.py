"""The healthcare and chemistry examples: run end to end locally, and their cluster manifests.

Each example runs under ``mas up`` as a subprocess (offline: no ``OPENAI_API_KEY``), and the test
asserts the lines its README promises: answers received, the gateway's refusals, DLP redaction
and blocking, the Node.js agent taking deliveries and replying, discovery by capability, and the
audit trails verified intact when ``mas up`` stops. The test stops ``mas up`` with SIGINT as soon
as the scripted conversation is over (``--duration`` is only a safety cap), so it takes seconds.
The Node.js professor is also run against a real sidecar, to check that it rejects what it cannot
handle and stops cleanly. Without ``node`` (Node.js 20+) those tests fail; they never skip.

The answerers' LLM paths are checked against a fake OpenAI server on loopback; nothing here
talks to any other address. The ``k8s/`` manifests must validate against the CRD schemas and the
models, and agree with the local manifests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from aiohttp import web
from conftest import Sidecars
from test_local_mode import HEADERS, MasUp, assert_no_survivors, final_table
from waiting import eventually

from mas.client import SidecarClient
from mas_cli.local.plan import plan_replicas
from mas_cli.local.secrets import EnvReferences, LocalSecrets
from mas_cli.manifest_files import load_directory
from mas_core.manifests import parse_agent, parse_policy
from mas_operator.builders import refusals
from mas_operator.config import OperatorConfig
from mas_operator.crds import agent_crd, gateway_policy_crd

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
HEALTHCARE = EXAMPLES / "healthcare"
CHEMISTRY = EXAMPLES / "chemistry"
PROFESSOR_JS = CHEMISTRY / "k8s" / "professor.js"
IMAGE_EXAMPLES = "/opt/mas/examples"  # where the mas image holds this repository's examples/
SAFETY_CAP_S = "60"  # seconds: mas up stops by itself after this
WAIT_S = 40.0  # seconds for each awaited line
K8S_FILES = sorted(
    path
    for path in EXAMPLES.glob("*/k8s/*.yaml")
    if path.name not in ("kustomization.yaml", "kustomizeconfig.yaml")
)
SCHEMAS = {
    crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for crd in (agent_crd(), gateway_policy_crd())
}
LLM_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL")


def offline_env() -> dict[str, str]:
    """This process's environment without any OpenAI settings: the examples answer by rules."""
    return {key: value for key, value in os.environ.items() if key not in LLM_ENV}


@pytest.fixture
def node() -> str:
    """The ``node`` binary (Node.js 20+). Missing, the test fails: it must not skip silently."""
    path = shutil.which("node")
    if path is None:
        pytest.fail(
            "node is not on PATH: the chemistry example's professor is a Node.js agent; "
            "install Node.js 20 or later (e.g. apt-get install nodejs)"
        )
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"node {version.stdout.strip()} is too old: the examples need Node.js 20+")
    return path


# -- mas up, end to end -------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OpenAI settings in the environment ``mas up`` passes on: the examples use rules."""
    for key in LLM_ENV:
        monkeypatch.delenv(key, raising=False)


def run_until(directory: Path, cwd: Path, *done: str) -> str:
    """``mas up DIR``, stopped with SIGINT once each ``done`` pattern matched a line; the
    output. ``--duration`` only caps a run that never gets there."""
    with MasUp(str(directory), "--duration", SAFETY_CAP_S, "--log-dir", "logs", cwd=cwd) as up:
        for pattern in done:
            up.wait_for(pattern, timeout=WAIT_S)
        status, output = up.interrupt()
    assert status == 0, output
    return output


def lines_of(output: str, prefix: str) -> list[str]:
    """What ``prefix`` (e.g. ``doctor[0]``) printed, without the prefix."""
    start = re.compile(rf"^{re.escape(prefix)} +\| ")
    return [start.sub("", line) for line in output.splitlines() if start.match(line)]


def test_healthcare_example(tmp_path: Path, offline: None) -> None:
    output = run_until(
        HEALTHCARE,
        tmp_path,
        r"^patient\[0\] +\| consultation finished",
        r"^doctor\[0\] +\| denied by the gateway",
    )
    patient, doctor = lines_of(output, "patient[0]"), lines_of(output, "doctor[0]")

    answers = [line for line in patient if line.startswith("<- consultation.answer (rules): ")]
    assert len(answers) == 3, output
    assert "Rest in a quiet, dark room" in answers[0]
    assert "Drink plenty of fluids" in answers[2]
    # DLP redact: the SSN left the patient's sidecar as a marker; the doctor never saw it.
    assert (
        "question from default/patient: My SSN is [REDACTED:us_ssn], can you add it to my "
        "insurance record?"
    ) in doctor
    assert not [line for line in doctor if "123-45-6789" in line]
    # DLP block: the card number never left; the patient's SDK raised DlpBlockedError.
    assert (
        "blocked by DLP (dlp_blocked): the payload holds data the policy blocks: payment_card"
        in patient
    )
    assert not [line for line in doctor if "4111" in line or "copay" in line]
    # The policy: a deny rule, and no rule letting the doctor start a conversation.
    assert (
        "denied by the gateway (forbidden): denied by rule default/healthcare/no-admin" in patient
    )
    assert (
        "denied by the gateway: no rule allows default/doctor to send 'followup.reminder' "
        "to default/patient"
    ) in doctor
    assert "consultation finished: 3 answered, 1 blocked by DLP, 1 denied" in patient
    for agent in ("default/doctor", "default/patient"):
        assert re.search(rf"audit trail of {agent}: \d+ entries in 1 chain\(s\), intact", output)
    table = final_table(output)
    assert table["default/doctor-0"][1:3] == ["running", "0"]
    doctor = dict(zip(HEADERS, table["default/doctor-0"], strict=True))
    patient_row = dict(zip(HEADERS, table["default/patient-0"], strict=True))
    # delivered: the three allowed questions, and the empty one the doctor dead-letters
    assert (doctor["DELIVERED"], doctor["DEAD LETTERS"]) == ("4", "1")
    # the patient's sidecar refused the DLP-blocked question and the denied one
    assert patient_row["REFUSED"] == "2"
    assert_no_survivors(output)


def test_chemistry_example(tmp_path: Path, node: str, offline: None) -> None:
    output = run_until(
        CHEMISTRY,
        tmp_path,
        r"^student\[0\] +\| homework done",
        r"^professor\[0\] +\| note from default/student",
    )
    student, professor = lines_of(output, "student[0]"), lines_of(output, "professor[0]")

    # The Node.js agent: up on its sidecar, metadata published.
    assert [
        line
        for line in professor
        if re.fullmatch(
            r"professor default/professor on node v\d+\.\d+\.\d+, "
            r"capabilities chemistry.tutoring, answers from rules",
            line,
        )
    ], output
    # Discovery by capability, with the metadata the Node agent published.
    assert "looking for an agent with capability chemistry.tutoring" in student
    assert [
        line
        for line in student
        if re.fullmatch(
            r"found default/professor \(capabilities chemistry\.tutoring; javascript on "
            r"node v\d+\.\d+\.\d+, answers from rules\)",
            line,
        )
    ], output
    # Deliveries over server-sent events, replies and acks, all from Node.
    assert "question from default/student: What is the molar mass of C6H12O6?" in professor
    reply = "<- homework.answer from default/professor (rules): "
    assert (
        reply + "M(C6H12O6) = 6 x C 12.011 + 12 x H 1.008 + 6 x O 15.999 = 180.16 g/mol."
    ) in student
    assert reply + "n = m / M = 10 g / 58.44 g/mol = 0.171 mol of NaCl." in student
    assert (
        reply + "HCl is a strong acid, so [H+] = 0.01 M and pH = -log10(0.01) = 2.00."
    ) in student
    assert (
        reply + "M(Ca(OH)2) = 1 x Ca 40.078 + 2 x O 15.999 + 2 x H 1.008 = 74.09 g/mol."
    ) in student
    assert "homework done: 4 of 4 questions answered" in student
    assert "note from default/student: thanks for 4 answers" in professor  # a plain message
    assert "professor stopped" in professor  # SIGTERM handled
    for agent in ("default/professor", "default/student"):
        assert re.search(rf"audit trail of {agent}: \d+ entries in 1 chain\(s\), intact", output)
    table = final_table(output)
    sent, delivered = table["default/professor-0"][4:6]
    assert (int(sent), int(delivered)) == (4, 5)  # four replies; four questions and a note
    assert table["default/professor-0"][1:3] == ["running", "0"]
    assert_no_survivors(output)


# -- the Node.js agent against a real sidecar ----------------------------------------------------


async def dead_letter_reasons(client: SidecarClient, count: int) -> list[str]:
    """The reasons of the first ``count`` dead letters, waiting for them to appear."""

    async def reasons() -> list[str] | None:
        letters = await client.dead_letters()
        return [letter["reason"] for letter in letters] if len(letters) >= count else None

    found: list[str] = await eventually(reasons, f"{count} dead letters")
    return found


async def test_node_professor_answers_rejects_and_stops(
    sidecars: Sidecars, node: str, tmp_path: Path
) -> None:
    professor = sidecars.start("default/professor", capabilities=["chemistry.tutoring"])
    student = sidecars.start("default/student")
    output = tmp_path / "professor.out"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            node,
            str(PROFESSOR_JS),
            env={
                **offline_env(),
                "MAS_SIDECAR_URL": professor.url,
                "MAS_SIDECAR_TOKEN": professor.token,
            },
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with student.client() as client, professor.client() as own:
            question = {"question": "What is the molar mass of NaCl?"}
            reply = await client.request(
                "professor", "homework.question", question, timeout_ms=10_000
            )
            assert reply["type"] == "homework.answer"
            assert reply["payload"] == {
                "answer": "M(NaCl) = 1 x Na 22.99 + 1 x Cl 35.45 = 58.44 g/mol.",
                "source": "rules",
            }
            (listed,) = await client.discover(["chemistry.tutoring"])
            assert listed["metadata"]["language"] == "javascript"
            await client.send("professor", "homework.cheat", {"question": "the answers?"})
            await client.send("professor", "homework.question", {"question": 42})
            reasons = await dead_letter_reasons(own, 2)
        assert sorted(reasons) == [
            "rejected: no handler for message type 'homework.cheat'",
            "rejected: payload.question must be a non-empty string",
        ]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), 10)
    assert status == 0
    assert output.read_text().splitlines()[-1] == "professor stopped"


# -- the answerers' LLM paths, against a fake OpenAI API on loopback ----------------------------


class FakeOpenAI:
    """``POST /v1/chat/completions`` answering a fixed text (or an error), recording requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str] = []
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        self.authorization.append(request.headers.get("Authorization", ""))
        if self.status != 200:
            return web.json_response({"error": {"message": "down"}}, status=self.status)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": self.requests[-1]["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " The model's answer. "},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/v1"
    yield fake
    await runner.cleanup()


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The healthcare example's ``answers`` module."""
    spec = importlib.util.spec_from_file_location("healthcare_answers", HEALTHCARE / "answers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def test_doctor_rule_book_is_deterministic_and_needs_no_key(
    answers: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    responder = answers.make_responder()
    assert responder.source == "rules"
    first = await responder.answer("My head hurts, a HEADACHE since Monday")
    assert first == await responder.answer("My head hurts, a HEADACHE since Monday")
    assert first.startswith("Rest in a quiet, dark room")
    assert await responder.answer("Can I fly next week?") == answers.FALLBACK


async def test_doctor_asks_the_chat_model_when_a_key_is_set(
    answers: ModuleType, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_MODEL", "test-model")
    responder = answers.make_responder()
    assert responder.source == "llm:test-model"
    assert await responder.answer("I have a fever") == "The model's answer."
    (sent,) = fake_openai.requests
    assert sent["model"] == "test-model"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][1]["content"] == "I have a fever"
    assert fake_openai.authorization == ["Bearer sk-test"]
    fake_openai.status = 500  # the model is down: the rule book answers
    assert (await responder.answer("I have a fever")).startswith("Drink plenty of fluids")


async def node_answer(node: str, question: str, env: dict[str, str]) -> dict[str, Any]:
    script = (
        f"require({json.dumps(str(PROFESSOR_JS))}).answer({json.dumps(question)})"
        ".then((a) => console.log(JSON.stringify(a)))"
    )
    process = await asyncio.create_subprocess_exec(
        node, "-e", script, env=env, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def test_professor_rule_book_offline(node: str) -> None:
    offline = offline_env()
    assert await node_answer(node, "What is the pH of a 0.001 M NaOH solution?", offline) == {
        "answer": "NaOH is a strong base, so pOH = 3.00 and pH = 14 - pOH = 11.00.",
        "source": "rules",
    }
    unknown = await node_answer(node, "What is the molar mass of Xx2?", offline)
    assert unknown["answer"].startswith("Write down what is given")


async def test_professor_asks_the_chat_model_when_a_key_is_set(
    node: str, fake_openai: FakeOpenAI
) -> None:
    env = {
        **offline_env(),
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_openai.url,
        "OPENAI_MODEL": "test-model",
    }
    answer = await node_answer(node, "Why do ions conduct?", env)
    assert answer == {"answer": "The model's answer.", "source": "llm:test-model"}
    assert fake_openai.authorization == ["Bearer sk-test"]
    assert fake_openai.requests[0]["messages"][1] == {
        "role": "user",
        "content": "Why do ions conduct?",
    }
    fake_openai.status = 503
    fallback = await node_answer(node, "What is the molar mass of H2O?", env)
    assert fallback == {
        "answer": "M(H2O) = 2 x H 1.008 + 1 x O 15.999 = 18.02 g/mol.",
        "source": "rules",
    }


# -- the manifests ------------------------------------------------------------------------------


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def mas_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d.get("kind") in SCHEMAS]


def test_k8s_folders_have_agents_and_policies() -> None:
    assert {p.parent.parent.name for p in K8S_FILES} >= {"healthcare", "chemistry"}
    for example in ("healthcare", "chemistry"):
        kinds = [
            d["kind"]
            for p in K8S_FILES
            if p.parent.parent.name == example
            for d in mas_documents(p)
        ]
        assert kinds.count("GatewayPolicy") == 1 and kinds.count("Agent") == 2, example


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_k8s_manifests_validate_against_crds_and_models(path: Path) -> None:
    kustomization = yaml.safe_load((path.parent / "kustomization.yaml").read_text())
    assert path.name in kustomization["resources"]
    for document in mas_documents(path):
        errors = list(jsonschema.Draft4Validator(SCHEMAS[document["kind"]]).iter_errors(document))
        assert [e.message for e in errors] == []
        assert document["metadata"]["namespace"] == kustomization["namespace"]
        if document["kind"] == "GatewayPolicy":
            parse_policy(document, str(path))
            continue
        agent = parse_agent(document, str(path))
        assert not agent.spec.host_network  # the e2e harness patches that in where it needs it
        assert agent.spec.local is None
        if agent.spec.image == "mas:0.1.0":
            script = agent.spec.command[1]
            assert agent.spec.command[0] == "python"
            assert script.startswith(IMAGE_EXAMPLES + "/")
            assert (EXAMPLES / script.removeprefix(IMAGE_EXAMPLES + "/")).is_file()
        else:
            assert agent.spec.image == "node:20-slim"
            mounted = {m["name"]: m["mountPath"] for m in agent.spec.volume_mounts}
            (volume,) = agent.spec.volumes
            script = Path(agent.spec.command[1])
            assert mounted[volume["name"]] == str(script.parent)
            (generator,) = kustomization["configMapGenerator"]
            assert generator["name"] == volume["configMap"]["name"]
            assert script.name in generator["files"]
            assert (path.parent / script.name).is_file()


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_k8s_agents_are_accepted_by_the_operator_as_installed(path: Path) -> None:
    """Under the operator's default settings (the restricted Pod Security Standard: uid 65532,
    read-only root), and with the host network a cluster without pod network gets."""
    default = OperatorConfig.from_env({"MAS_REDIS_URL": "redis://mas-redis:6379"})
    host_network = OperatorConfig.from_env(
        {"MAS_REDIS_URL": "redis://127.0.0.1:6379", "MAS_ALLOW_HOST_NETWORK": "true"}
    )
    for document in mas_documents(path):
        if document["kind"] != "Agent":
            continue
        assert refusals(parse_agent(document, str(path)), default) == []
        e2e = {**document, "spec": {**document["spec"], "hostNetwork": True}}
        assert refusals(parse_agent(e2e, str(path)), host_network) == []


@pytest.mark.parametrize(
    "path",
    sorted([*HEALTHCARE.glob("*.yaml"), *CHEMISTRY.glob("*.yaml")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_local_manifests_validate_against_crds_and_models(path: Path) -> None:
    (document,) = mas_documents(path)
    errors = list(jsonschema.Draft4Validator(SCHEMAS[document["kind"]]).iter_errors(document))
    assert [e.message for e in errors] == []
    parse = parse_agent if document["kind"] == "Agent" else parse_policy
    parse(document, str(path))


@pytest.mark.parametrize("example", [HEALTHCARE, CHEMISTRY], ids=lambda p: p.name)
def test_local_and_k8s_manifests_agree(example: Path) -> None:
    agents, (policy,) = load_directory(example)  # the k8s/ folder is not read by mas up
    cluster = {
        d["metadata"]["name"]: d for p in (example / "k8s").glob("*.yaml") for d in mas_documents(p)
    }
    assert parse_policy(cluster[policy.metadata.name], "k8s").spec == policy.spec
    assert len(agents) == 2
    for agent in agents:
        remote = parse_agent(cluster[agent.metadata.name], "k8s").spec
        assert (remote.capabilities, remote.roles) == (agent.spec.capabilities, agent.spec.roles)
        assert agent.spec.local is not None
        assert (example / agent.spec.local.command[-1]).is_file()
    ports = [d["spec"]["sidecar"]["port"] for d in cluster.values() if d["kind"] == "Agent"]
    assert len(set(ports)) == len(ports)


def test_kustomize_builds_the_professor_config_map() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the manifests are checked above without it)")
    built = subprocess.run(
        [kubectl, "kustomize", str(CHEMISTRY / "k8s")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    resources = {
        (d["kind"], d["metadata"]["name"].split("-")[0]): d
        for d in yaml.safe_load_all(built.stdout)
    }
    config_map = resources[("ConfigMap", "professor")]
    assert config_map["data"]["professor.js"] == PROFESSOR_JS.read_text()
    professor = resources[("Agent", "professor")]
    assert professor["spec"]["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["name"] != "professor-code"  # hashed: new code rolls the pods
    assert {
        d["metadata"].get("namespace") for k, d in resources.items() if k[0] != "Namespace"
    } == {"mas-chemistry"}


LLM_AGENTS = {"healthcare": "doctor", "chemistry": "professor"}
OPENAI_SECRET = {"name": "openai", "key": "api-key", "optional": True}


@pytest.mark.parametrize("example", [HEALTHCARE, CHEMISTRY], ids=lambda p: p.name)
def test_the_api_key_comes_from_a_secret_never_a_value_in_the_manifest(example: Path) -> None:
    name = LLM_AGENTS[example.name]
    for path in (example / f"{name}.yaml", example / "k8s" / f"{name}.yaml"):
        (document,) = [d for d in mas_documents(path) if d["kind"] == "Agent"]
        (key,) = [e for e in document["spec"]["env"] if e["name"] == "OPENAI_API_KEY"]
        assert key == {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": OPENAI_SECRET}}
    readme = (example / "README.md").read_text()
    assert "kubectl -n mas-" in readme and "create secret generic openai" in readme
    assert "openai/api-key=" in readme


@pytest.mark.parametrize("example", [HEALTHCARE, CHEMISTRY], ids=lambda p: p.name)
def test_locally_the_api_key_comes_from_the_secrets_file_or_stays_unset(
    example: Path, tmp_path: Path
) -> None:
    agents, _ = load_directory(example)
    path = tmp_path / ".secrets"
    path.write_text("openai/api-key=sk-test\n")
    with_file = plan_replicas(
        agents, example, iter(range(41000, 41100)), EnvReferences(LocalSecrets.read(path), {})
    )
    keys = {p.name: p.agent_env.get("OPENAI_API_KEY") for p in with_file}
    assert keys == {
        name: ("sk-test" if name == LLM_AGENTS[example.name] else None) for name in keys
    }
    offline = plan_replicas(agents, example, iter(range(41000, 41100)), EnvReferences())
    assert not [p for p in offline if "OPENAI_API_KEY" in p.agent_env]

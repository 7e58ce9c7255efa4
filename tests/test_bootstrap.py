"""``mas-operator bootstrap``, the chart's hook Job, against the kmock Kubernetes emulator.

The command runs as the Job runs it (its arguments, a kubeconfig), in a worker thread while the
test's event loop serves the emulator: the Secrets are created once with usable values, never
rewritten, marked ``helm.sh/resource-policy: keep`` (also when an earlier chart made them), and
a Secret that exists without what it must hold stops the install with a clear message.
"""

from __future__ import annotations

import asyncio
from base64 import b64decode, b64encode
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from mas_operator.anchor import anchor_from_secret
from mas_operator.main import main
from tests.operator_harness import OPERATOR_NAMESPACE, SECRETS, OperatorHarness, emulated_api

ARGS = [
    *("bootstrap", "--namespace", OPERATOR_NAMESPACE, "--anchor-secret", "mas-trust-anchor"),
    *("--redis-secret", "mas-redis", "--redis-password-key", "pw"),
]
KEEP = {"helm.sh/resource-policy": "keep"}


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorHarness]:
    async with emulated_api(kmock, tmp_path / "kubeconfig", monkeypatch) as harness:
        yield harness


async def bootstrap(
    capsys: pytest.CaptureFixture[str], args: list[str] = ARGS
) -> tuple[int, str, str]:
    """Run the command in a thread (the emulator keeps serving); status, stdout, stderr."""
    status = await asyncio.to_thread(main, args)
    out, err = capsys.readouterr()
    return status, out, err


def secret(cluster: OperatorHarness, name: str) -> dict[str, Any]:
    found = cluster.object(SECRETS, OPERATOR_NAMESPACE, name)
    assert found is not None, name
    return found


async def test_the_secrets_are_created_once_and_kept_as_they_are(
    cluster: OperatorHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await bootstrap(capsys)
    assert status == 0
    anchor, redis = secret(cluster, "mas-trust-anchor"), secret(cluster, "mas-redis")
    kid = anchor_from_secret(anchor).kid
    password = b64decode(redis["data"]["pw"]).decode()
    assert len(password) >= 43  # 256 random bits
    for created in (anchor, redis):
        assert created["metadata"]["annotations"] == KEEP
    assert out.splitlines() == [
        f"created Secret {OPERATOR_NAMESPACE}/mas-trust-anchor (trust anchor {kid})",
        f"created Secret {OPERATOR_NAMESPACE}/mas-redis (Redis password)",
    ]
    assert password not in out

    status, out, _ = await bootstrap(capsys)  # the next install or upgrade
    assert status == 0
    assert secret(cluster, "mas-trust-anchor")["data"] == anchor["data"]
    assert secret(cluster, "mas-redis")["data"] == redis["data"]
    assert out.splitlines() == [
        f"kept Secret {OPERATOR_NAMESPACE}/mas-trust-anchor (trust anchor {kid})",
        f"kept Secret {OPERATOR_NAMESPACE}/mas-redis (Redis password)",
    ]


async def test_secrets_an_earlier_chart_rendered_are_kept_and_marked_for_helm_to_keep(
    cluster: OperatorHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    owned_by_helm = {"meta.helm.sh/release-name": "mas"}
    password = b64encode(b"chosen-by-hand").decode()
    await cluster.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "mas-redis",
                "namespace": OPERATOR_NAMESPACE,
                "annotations": owned_by_helm,
            },
            "data": {"pw": password},
        },
    )
    status, out, _ = await bootstrap(capsys)
    assert status == 0
    redis = secret(cluster, "mas-redis")
    assert redis["data"] == {"pw": password}
    assert redis["metadata"]["annotations"] == owned_by_helm | KEEP
    assert f"kept Secret {OPERATOR_NAMESPACE}/mas-redis (Redis password)" in out


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("mas-trust-anchor", {"anchor.key": b64encode(b"garbage").decode()}, "no usable trust"),
        ("mas-redis", {"password": b64encode(b"other key").decode()}, "has no 'pw'"),
    ],
)
async def test_a_secret_without_what_it_must_hold_stops_the_install(
    cluster: OperatorHarness,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: dict[str, str],
    message: str,
) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "data": data}
    await cluster.create(SECRETS, body | {"metadata": {"name": name, "namespace": "mas-system"}})
    status, _, err = await bootstrap(capsys)
    assert status == 1
    assert err.startswith(f"mas-operator bootstrap: Secret {OPERATOR_NAMESPACE}/{name} ")
    assert message in err
    assert secret(cluster, name)["data"] == data  # left for a human to fix


async def test_without_a_redis_secret_only_the_anchor_is_made(
    cluster: OperatorHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await bootstrap(capsys, ARGS[:5])
    assert status == 0
    assert len(out.splitlines()) == 1
    assert cluster.object(SECRETS, OPERATOR_NAMESPACE, "mas-redis") is None

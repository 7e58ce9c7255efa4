"""Traces and JSON logs on a real cluster: the chart's ``operator.otlpEndpoint`` and
``operator.logFormat`` reach the pods the operator makes.

A release of its own is installed with both set; the healthcare example's patient consults the
doctor in pods, and the spans its SDK and both sidecars export arrive, as one trace per
consultation, at an OTLP/HTTP receiver this test runs on the host; the sidecars log one JSON
object per line, each naming its agent. Pods reach the receiver on the host's loopback, so this
runs on the local host-network cluster only. Run by ``python -m pytest e2e``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from e2e.kube import E2ECluster, HostVolumes
from e2e.test_operator import (
    FINISHED,
    Release,
    chart_values,
    emptied,
    healthcare,
    installed,
    logs,
    wait_until,
)
from tests.otlp import ReceivedSpan, Receiver, otlp_receiver

RELEASE = "mas-obs"  # holds the chart's name: its objects are named after it alone
RELEASE_NAMESPACE = "mas-observed"


@pytest.fixture(scope="module")
def receiver(e2e_cluster: E2ECluster) -> Iterator[Receiver]:
    if not e2e_cluster.local:
        pytest.skip("pods reach a receiver on the host's loopback on the host-network cluster")
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def observed(
    e2e_cluster: E2ECluster, mas_image: str, volumes: HostVolumes, receiver: Receiver
) -> Iterator[Release]:
    volumes.provide(RELEASE_NAMESPACE, f"data-{RELEASE}-redis-0")
    values = chart_values(e2e_cluster, mas_image, volumes.storage_class)
    values["operator"] |= {"logFormat": "json", "otlpEndpoint": receiver.endpoint}
    with installed(e2e_cluster, values, RELEASE, RELEASE_NAMESPACE) as release:
        yield release


def _chain(spans: list[ReceivedSpan], namespace: str) -> list[str] | None:
    """The span names from the doctor's ``process`` span up to its trace's root, when that root
    is the patient's request."""
    by_id = {span.span_id: span for span in spans}
    handler = (f"{namespace}/doctor", "process consultation.question")
    for start in spans:
        if (start.service, start.name) != handler:
            continue
        path, span = [start], start
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            path.append(span)
        if span.parent_id == "" and span.service == f"{namespace}/patient":
            return [f"{step.service} {step.name}" for step in path]
    return None


def test_pods_export_one_trace_per_consultation_and_sidecars_log_json(
    observed: Release, receiver: Receiver, namespace: str, mas_image: str
) -> None:
    cluster = observed.cluster
    cluster.apply(healthcare(namespace, cluster, mas_image))
    try:
        wait_until(
            lambda: FINISHED in logs(cluster, namespace, "patient"),
            timeout=240,
            what="the patient's consultation",
        )
        path = wait_until(
            lambda: _chain(list(receiver.spans), namespace),
            timeout=60,
            what="a trace from the patient's request to the doctor's handler",
        )
        assert path == [
            f"{namespace}/doctor process consultation.question",
            "mas-sidecar receive",
            "mas-sidecar request",
            f"{namespace}/patient request consultation.question",
        ]
        lines = cluster.kubectl(
            "logs", "-n", namespace, "deployment/patient", "-c", "mas-sidecar"
        ).splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        assert entries
        assert {entry["agent_id"] for entry in entries} == {f"{namespace}/patient"}
    except AssertionError:
        for name in ("patient", "doctor"):  # shown by pytest: what the pods said
            for container in ("agent", "mas-sidecar"):
                print(f"--- {name} {container}")
                arguments = ["-n", namespace, f"deployment/{name}", "-c", container, "--tail=40"]
                print(cluster.kubectl("logs", *arguments, check=False))
        print(f"--- {len(receiver.spans)} spans received")
        raise
    finally:
        emptied(cluster, namespace)

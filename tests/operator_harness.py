"""Running the operator's kopf handlers against the kmock Kubernetes emulator and a real Redis.

``OperatorHarness`` declares the resources the operator uses in a kmock emulator, writes a
kubeconfig pointing at it, and runs the operator (``mas_operator.handlers.register``) under
``kopf.testing.KopfRunner`` in its own thread; the test's event loop keeps serving the emulator.
kmock gives objects no uid, generation or resourceVersion, so the helpers here set them, and
stand in for the Deployment controller where a test needs a rolled-out Deployment.
:class:`ServerSideApplyEmulator` teaches kmock the server-side apply the operator writes with;
a test module selects it with ``pytestmark = pytest.mark.kmock(cls=ServerSideApplyEmulator)``.
Used by tests/test_operator_handlers.py and tests/test_bootstrap.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import kmock
import kopf
import pytest
from kopf.testing import KopfRunner

from mas_operator.config import OperatorConfig
from mas_operator.handlers import operator_settings, register
from mas_operator.metrics import OperatorMetrics

AGENTS = "mas.dev/v1alpha1/agents"
POLICIES = "mas.dev/v1alpha1/gatewaypolicies"
EXTERNALS = "mas.dev/v1alpha1/externalagents"
SECRETS = "v1/secrets"
CONFIGMAPS = "v1/configmaps"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
ALL_VERBS = {"list", "watch", "get", "patch", "create", "update", "delete"}
OPERATOR_NAMESPACE = "mas-system"
APPLY_PATCH = "application/apply-patch+yaml"


def applied(current: Any, previous: Any, config: Any) -> Any:
    """What server-side apply makes of ``current`` when a field manager whose last applied
    configuration was ``previous`` applies ``config``: every field of ``config`` set (maps
    merged key by key, lists and scalars taken whole), the fields of ``previous`` that
    ``config`` no longer has removed, and everything else (other writers' fields) kept.

    The API server merges lists of named items (containers, volumes, ...) item by item and
    tracks each field's managers; one applier beside writers that do not apply, as here, needs
    neither."""
    if not isinstance(current, Mapping) or not isinstance(config, Mapping):
        return config
    before = previous if isinstance(previous, Mapping) else {}
    result = {key: value for key, value in current.items() if key in config or key not in before}
    for key, value in config.items():
        result[key] = applied(current.get(key), before.get(key), value)
    return result


def replacing_patch(current: Any, desired: Any) -> Any:
    """A JSON merge patch (RFC 7386) that turns ``current`` into ``desired``: keys of
    ``current`` that ``desired`` lacks become null, lists and scalars are taken as they are."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return desired
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        patch[key] = replacing_patch(current.get(key), value)
    return patch


@attrs.define(kw_only=True)
class ServerSideApplyEmulator(kmock.KubernetesEmulator):
    """kmock's emulator that also serves server-side apply: a ``PATCH`` of an object as
    ``application/apply-patch+yaml`` with a ``fieldManager`` and ``force=true``.

    An apply creates the object when there is none; otherwise it changes it as :func:`applied`
    says, after checking the resourceVersion the configuration may carry (409 when it differs).
    Either way it becomes the emulator's own create or merge patch, so watchers see it.
    """

    _configs: dict[tuple[Any, ...], Any] = attrs.field(factory=dict, init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        content_type = request.headers.get("Content-Type", "")
        if (
            request.method != kmock.method.PATCH
            or not content_type.startswith(APPLY_PATCH)
            or request.resource is None
            or request.name is None
        ):
            return await super()._handle(request)
        manager = request.params.get("fieldManager")
        if not manager or request.params.get("force") != "true":
            raise kmock.KubernetesError(
                status=422, reason="Invalid", message="apply needs a fieldManager and force"
            )
        key = (request.resource, request.namespace, request.name)
        config = dict(request.data)
        metadata = dict(config.get("metadata") or {})
        version = metadata.pop("resourceVersion", None)
        config["metadata"] = metadata
        try:
            current: kmock.Object | None = self.objects[key]
        except KeyError:
            current = None
        if current is None or current.deleted:
            self._configs[(*key, manager)] = config
            return await self._handle_as(
                request, method=kmock.method.POST, action=kmock.action.CREATE, data=config
            )
        stored = current.raw
        if version is not None and version != stored["metadata"].get("resourceVersion"):
            raise kmock.KubernetesError(
                status=409, reason="Conflict", message="the object has been modified"
            )
        previous = self._configs.get((*key, manager))
        self._configs[(*key, manager)] = config
        change = replacing_patch(stored, applied(stored, previous, config))
        return await self._handle_as(request, data=change)

    async def _handle_as(
        self, request: kmock.Request, **changes: Any
    ) -> aiohttp.web.StreamResponse:
        """Serve ``request`` with ``changes``; kmock's reactions find a request by identity in
        the request log, so the changed one takes its place there too."""
        changed = attrs.evolve(request, **changes)
        self._requests[self._requests.index(request)] = changed
        return await super()._handle(changed)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    def info(kind: str, singular: str, *, namespaced: bool = True, status: bool = False) -> Any:
        return kmock.ResourceInfo(
            kind=kind,
            singular=singular,
            namespaced=namespaced,
            verbs=ALL_VERBS,
            subresources={"status"} if status else set(),
        )

    emulator.resources[AGENTS] = info("Agent", "agent", status=True)
    emulator.resources[POLICIES] = info("GatewayPolicy", "gatewaypolicy", status=True)
    emulator.resources[EXTERNALS] = info("ExternalAgent", "externalagent", status=True)
    emulator.resources["v1/namespaces"] = info("Namespace", "namespace", namespaced=False)
    emulator.resources[SECRETS] = info("Secret", "secret")
    emulator.resources[CONFIGMAPS] = info("ConfigMap", "configmap")
    emulator.resources["v1/events"] = info("Event", "event")
    emulator.resources[DEPLOYMENTS] = info("Deployment", "deployment", status=True)
    emulator.resources[SERVICES] = info("Service", "service")


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: tester, user: {token: not-a-secret}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: tester}}]\n",
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def emulated_api(
    emulator: kmock.KubernetesEmulator, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorHarness]:
    """The emulator serving the operator's resources, ``KUBECONFIG`` (written to
    ``kubeconfig``) pointing at it, and a harness on it whose operator is not started yet."""
    declare_resources(emulator)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(kubeconfig, str(emulator.url))))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    async with aiohttp.ClientSession(base_url=str(emulator.url)) as session:
        yield OperatorHarness(emulator, session)


def harness_config(redis_url: str, **overrides: Any) -> OperatorConfig:
    """Settings for a test: fast status refresh and retries, no peering, no ports."""
    base = OperatorConfig(
        redis_url=redis_url,
        agent_redis_url=redis_url,
        sidecar_image="mas:test",
        operator_namespace=OPERATOR_NAMESPACE,
        token_ttl_seconds=3600,
        status_interval_seconds=0.3,
        retry_seconds=0.5,
        health_port=0,
        metrics_port=0,
        standalone=True,
    )
    return replace(base, **overrides)


class OperatorHarness:
    """The emulator's state and an HTTP session to it; ``run`` starts the operator."""

    def __init__(self, emulator: kmock.KubernetesEmulator, session: aiohttp.ClientSession):
        self.emulator = emulator
        self.session = session
        self._generations: dict[tuple[str, str, str], int] = {}
        self._versions = 0
        self.runner: KopfRunner | None = None
        self.metrics = OperatorMetrics()

    def start(self, config: OperatorConfig) -> None:
        assert isinstance(self.emulator, ServerSideApplyEmulator), (
            "the operator writes with server-side apply: "
            "pytestmark = pytest.mark.kmock(cls=ServerSideApplyEmulator)"
        )
        registry = kopf.OperatorRegistry()
        register(registry, config, self.metrics)
        args = ["run", "--standalone", "--verbose"]
        args += [f"--namespace={ns}" for ns in config.namespaces] or ["--all-namespaces"]
        self.runner = KopfRunner(
            args, registry=registry, settings=operator_settings(config), timeout=30
        )
        self.runner.__enter__()

    async def stop(self) -> str:
        """Stop the operator; its output."""
        if self.runner is None:
            return ""
        runner, self.runner = self.runner, None
        # __exit__ joins the operator's thread: let the emulator keep serving meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, runner.__exit__, None, None, None)
        return runner.output

    # -- objects ----------------------------------------------------------------------------

    def object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        try:
            obj = self.emulator.objects[key]
        except KeyError:
            return None
        if obj.deleted:
            return None
        return dict(obj.raw)

    def _next_version(self) -> str:
        self._versions += 1
        return str(self._versions)

    async def create(self, resource: str, body: Mapping[str, Any]) -> None:
        group_version, plural = resource.rsplit("/", 1)
        namespace = body["metadata"]["namespace"]
        name = body["metadata"]["name"]
        self._generations[(resource, namespace, name)] = 1
        metadata = {
            **body["metadata"],
            "uid": f"uid-{namespace}-{name}",
            "generation": 1,
            "resourceVersion": self._next_version(),
        }
        prefix = "/api/" if "/" not in group_version else "/apis/"
        url = f"{prefix}{group_version}/namespaces/{namespace}/{plural}"
        response = await self.session.post(url, json={**body, "metadata": metadata})
        assert response.status in (200, 201), await response.text()

    async def patch_spec(self, resource: str, namespace: str, name: str, spec: Any) -> None:
        """A spec change as the API server makes it: merged, generation bumped."""
        key = (resource, namespace, name)
        self._generations[key] += 1
        await self._patch(
            resource,
            namespace,
            name,
            {
                "spec": spec,
                "metadata": {
                    "generation": self._generations[key],
                    "resourceVersion": self._next_version(),
                },
            },
        )

    async def edit(self, resource: str, namespace: str, name: str, patch: Any) -> None:
        """A change by hand: a merge patch, as ``kubectl patch --type=merge`` sends."""
        await self._patch(resource, namespace, name, patch)

    async def _patch(
        self, resource: str, namespace: str, name: str, patch: Any, subresource: str = ""
    ) -> None:
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/" if "/" not in group_version else "/apis/"
        url = f"{prefix}{group_version}/namespaces/{namespace}/{plural}/{name}{subresource}"
        response = await self.session.patch(
            url, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status == 200, await response.text()

    async def delete(self, resource: str, namespace: str, name: str) -> None:
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/" if "/" not in group_version else "/apis/"
        response = await self.session.delete(
            f"{prefix}{group_version}/namespaces/{namespace}/{plural}/{name}"
        )
        assert response.status == 200, await response.text()

    async def roll_out(self, namespace: str, name: str, replicas: int) -> None:
        """Stand in for the Deployment controller: the Deployment's pods are all available."""
        deployment = self.object(DEPLOYMENTS, namespace, name)
        assert deployment is not None
        generation = int(deployment["metadata"].get("generation") or 1)
        await self._patch(
            DEPLOYMENTS,
            namespace,
            name,
            {
                "metadata": {"generation": generation},
                "status": {
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                },
            },
        )


def condition(obj: Mapping[str, Any] | None, type: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type:
            return dict(cond)
    return None

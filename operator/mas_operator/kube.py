"""The operator's Kubernetes client: read, create and update the objects it owns, as plain dicts.

A thin layer over the ``kubernetes`` client (configured in-cluster, or from ``KUBECONFIG``) that
returns manifests as dicts and turns API errors into :class:`KubeError`. ``apply`` is
create-or-update: an object is updated (its owned fields replaced by a merge patch) only when
the operator's part of it differs, so a reconcile that changes nothing writes nothing, and never
when another controller, or none, owns it (:class:`NotOwnedError`). kopf
itself watches the custom resources and patches their status; this client is for everything
else. Used by :mod:`mas_operator.handlers`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

Manifest = dict[str, Any]
GROUP = "mas.dev"
VERSION = "v1alpha1"
APPLIED_ANNOTATION = "mas.dev/applied"


class KubeError(RuntimeError):
    """A Kubernetes API call failed; ``status`` is its HTTP status (0 when none came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotOwnedError(KubeError):
    """An object the operator would write exists and is not controlled by the owner it would
    give it: an Agent named like someone else's Deployment or Secret does not take it over."""


def load_configuration() -> kubernetes.client.Configuration:
    """The API server and credentials: in-cluster in a pod, else from ``KUBECONFIG`` (read now:
    the library reads it only when imported) or ``~/.kube/config``."""
    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


def load_client() -> kubernetes.client.ApiClient:
    """An API client for :class:`KubeApi`."""
    return kubernetes.client.ApiClient(load_configuration())


def login(**_kwargs: Any) -> kopf.ConnectionInfo:
    """kopf's login handler: the same server and credentials as :func:`load_client`."""
    configuration = load_configuration()
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _body(response: Any) -> Manifest:
    data: Manifest = json.loads(response.data or b"{}")
    return data


class KubeApi:
    """Secrets, ConfigMaps, Deployments and GatewayPolicies, as dicts."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._core = kubernetes.client.CoreV1Api(client)
        self._apps = kubernetes.client.AppsV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Manifest | None:
        """``method(*args)``; None on 404, :class:`KubeError` on any other failure."""
        try:
            return _body(method(*args, _preload_content=False, **kwargs))
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(exc.status or 0, f"{what}: {exc.status} {exc.reason}") from None
        except OSError as exc:  # urllib3's connection errors are OSErrors
            raise KubeError(0, f"{what}: {exc}") from None

    # -- reads --------------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> Manifest | None:
        return self._call(
            f"read secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
        )

    def get_deployment(self, namespace: str, name: str) -> Manifest | None:
        return self._call(
            f"read deployment {namespace}/{name}",
            self._apps.read_namespaced_deployment,
            name,
            namespace,
        )

    def list_gateway_policies(self, namespaces: tuple[str, ...]) -> list[Manifest]:
        """Every GatewayPolicy in ``namespaces`` (all namespaces when empty)."""
        if not namespaces:
            listed = self._call(
                "list gatewaypolicies",
                self._custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                "gatewaypolicies",
            )
            return list((listed or {}).get("items") or [])
        items: list[Manifest] = []
        for namespace in namespaces:
            listed = self._call(
                f"list gatewaypolicies in {namespace}",
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "gatewaypolicies",
            )
            items += (listed or {}).get("items") or []
        return items

    # -- writes -------------------------------------------------------------------------------

    def apply(self, desired: Manifest, *, compare: tuple[str, ...]) -> Manifest:
        """Create ``desired`` (a Secret, ConfigMap or Deployment), or update the existing one
        when its labels, owner references or the top-level fields in ``compare`` changed.

        Changes are found by a hash of the desired fields kept in the annotation
        :data:`APPLIED_ANNOTATION` (the API server adds defaults, so the stored object never
        equals the desired one). The update is a JSON merge patch that replaces each field in
        ``compare`` as a whole (see :func:`replacing_patch`), carries the resourceVersion it was
        computed from (a concurrent change is a 409 :class:`KubeError`, and kopf retries) and
        leaves other metadata (other labels and annotations, finalizers) alone: an object a Helm
        release created keeps the labels Helm needs.
        """
        kind = desired["kind"]
        namespace = desired["metadata"]["namespace"]
        name = desired["metadata"]["name"]
        read, create, patch = self._methods(kind)
        digest = applied_hash(desired, compare)
        metadata = dict(desired["metadata"])
        metadata["annotations"] = {
            **(metadata.get("annotations") or {}),
            APPLIED_ANNOTATION: digest,
        }
        current = self._call(f"read {kind} {namespace}/{name}", read, name, namespace)
        owner = next(
            (r for r in metadata.get("ownerReferences") or () if r.get("controller")), None
        )
        if current is not None and owner is not None:
            ensure_controlled(current, owner)
        if current is None:
            wanted = {**desired, "metadata": metadata}
            created = self._call(f"create {kind} {namespace}/{name}", create, namespace, wanted)
            return created or wanted
        meta = current.get("metadata") or {}
        if (meta.get("annotations") or {}).get(APPLIED_ANNOTATION) == digest:
            return current
        body: Manifest = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "labels": metadata.get("labels") or {},
                "ownerReferences": metadata.get("ownerReferences"),
                "annotations": {APPLIED_ANNOTATION: digest},
            }
        }
        body.update({key: replacing_patch(current.get(key), desired.get(key)) for key in compare})
        updated = self._call(
            f"update {kind} {namespace}/{name}",
            patch,
            name,
            namespace,
            body,
            _content_type="application/merge-patch+json",
        )
        if updated is None:
            raise KubeError(404, f"update {kind} {namespace}/{name}: it was deleted meanwhile")
        return updated

    def _methods(self, kind: str) -> tuple[Any, Any, Any]:
        """Read, create and patch of ``kind``."""
        if kind == "Secret":
            core = self._core
            return (
                core.read_namespaced_secret,
                core.create_namespaced_secret,
                core.patch_namespaced_secret,
            )
        if kind == "ConfigMap":
            core = self._core
            return (
                core.read_namespaced_config_map,
                core.create_namespaced_config_map,
                core.patch_namespaced_config_map,
            )
        if kind == "Deployment":
            apps = self._apps
            return (
                apps.read_namespaced_deployment,
                apps.create_namespaced_deployment,
                apps.patch_namespaced_deployment,
            )
        raise ValueError(f"cannot apply a {kind}")

    def create_secret(self, secret: Manifest) -> Manifest | None:
        """Create ``secret``; None when one of that name exists already (409)."""
        namespace = secret["metadata"]["namespace"]
        try:
            return self._call(
                f"create secret {namespace}/{secret['metadata']['name']}",
                self._core.create_namespaced_secret,
                namespace,
                secret,
            )
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    def annotate_secret(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Add ``annotations`` to Secret ``namespace/name`` (a merge patch: nothing else)."""
        self._call(
            f"annotate secret {namespace}/{name}",
            self._core.patch_namespaced_secret,
            name,
            namespace,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
        )


def _group(api_version: Any) -> str:
    return str(api_version or "").rpartition("/")[0]


def ensure_controlled(current: Mapping[str, Any], owner: Mapping[str, Any]) -> None:
    """Raise :class:`NotOwnedError` unless ``current`` (an object as read) has a controller
    ownerReference of the group, kind and name of ``owner`` (an ownerReference).

    The uid may differ: an Agent deleted and created again under the same name takes over what
    its predecessor left behind (and the owner reference is rewritten to it).
    """
    meta = current.get("metadata") or {}
    wanted = (_group(owner.get("apiVersion")), owner.get("kind"), owner.get("name"))
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            if (_group(ref.get("apiVersion")), ref.get("kind"), ref.get("name")) == wanted:
                return
            held = f"controlled by {ref.get('kind')} {ref.get('name')}"
            break
    else:
        held = "not controlled by any owner"
    what = f"{current.get('kind') or 'object'} {meta.get('namespace')}/{meta.get('name')}"
    raise NotOwnedError(409, f"{what} exists and is {held}, not {wanted[1]} {wanted[2]}")


def replacing_patch(current: Any, desired: Any) -> Any:
    """A JSON merge patch (RFC 7386) that turns ``current`` into ``desired`` wherever it is
    applied: keys of ``current`` that ``desired`` lacks become null (the API server then
    defaults them again, as a PUT would), lists and scalars are taken as they are."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return desired
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        patch[key] = replacing_patch(current.get(key), value)
    return patch


def applied_hash(desired: Mapping[str, Any], compare: tuple[str, ...]) -> str:
    """A hash of what the operator sets on an object: labels, owners and ``compare`` fields."""
    meta = desired["metadata"]
    owned = {
        "labels": meta.get("labels") or {},
        "ownerReferences": meta.get("ownerReferences") or [],
        **{key: desired.get(key) for key in compare},
    }
    text = json.dumps(owned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

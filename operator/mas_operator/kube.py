"""The operator's Kubernetes client: read, create and update the objects it owns, as plain dicts.

A thin layer over the ``kubernetes`` client (configured in-cluster, or from ``KUBECONFIG``) that
returns manifests as dicts and turns API errors into :class:`KubeError`. ``apply`` is
server-side apply as the field manager ``mas-operator``: the API server creates the object or
sets the operator's fields on it, taking back any the operator set that someone changed by hand,
and writes nothing when nothing differs; it never touches an object another controller, or none,
owns (:class:`NotOwnedError`). kopf itself watches the custom resources and patches their
status; this client is for everything else. Used by :mod:`mas_operator.handlers`,
:mod:`mas_operator.anchor` and :mod:`mas_operator.bootstrap`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

Manifest = dict[str, Any]
GROUP = "mas.dev"
VERSION = "v1alpha1"
FIELD_MANAGER = "mas-operator"
APPLY_PATCH = "application/apply-patch+yaml"


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
    """Secrets, ConfigMaps, Deployments, Services, Agents and GatewayPolicies, as dicts."""

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

    def get_service(self, namespace: str, name: str) -> Manifest | None:
        return self._call(
            f"read service {namespace}/{name}",
            self._core.read_namespaced_service,
            name,
            namespace,
        )

    def get_config_map(self, namespace: str, name: str) -> Manifest | None:
        return self._call(
            f"read configmap {namespace}/{name}",
            self._core.read_namespaced_config_map,
            name,
            namespace,
        )

    def get_agent(self, namespace: str, name: str) -> Manifest | None:
        return self._call(
            f"read agent {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "agents",
            name,
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

    def apply(self, desired: Manifest, current: Manifest | None) -> Manifest:
        """Server-side apply ``desired`` (a Secret, ConfigMap, Deployment or Service, with its
        apiVersion and kind) as the field manager :data:`FIELD_MANAGER`; the object as stored
        after it.

        ``current`` is the object as the caller just read it (None: there is none). When it
        exists it must be controlled by the controller owner ``desired`` names, if any
        (:class:`NotOwnedError`), and the apply carries its resourceVersion: a change made since
        the read is a 409 :class:`KubeError` (kopf retries). The API server then sets every field
        of ``desired`` (``force``: a field someone else set by hand is taken back), removes
        those the operator applied last time and no longer does, and keeps what others own
        beside them (other labels and annotations, finalizers, defaults): an object a Helm
        release created keeps the labels Helm needs. Nothing changes when nothing differs.
        """
        kind = desired["kind"]
        metadata = desired["metadata"]
        what = f"{kind} {metadata['namespace']}/{metadata['name']}"
        patch = self._patcher(kind)
        body = desired
        if current is not None:
            owner = next(
                (r for r in metadata.get("ownerReferences") or () if r.get("controller")), None
            )
            if owner is not None:
                ensure_controlled(current, owner)
            version = (current.get("metadata") or {}).get("resourceVersion")
            if version:
                body = {**desired, "metadata": {**metadata, "resourceVersion": version}}
        applied = self._call(
            f"apply {what}",
            patch,
            metadata["name"],
            metadata["namespace"],
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        )
        if applied is None:
            raise KubeError(404, f"apply {what}: it was deleted meanwhile")
        return applied

    def _patcher(self, kind: str) -> Any:
        """The patch method of ``kind``."""
        methods = {
            "Secret": self._core.patch_namespaced_secret,
            "ConfigMap": self._core.patch_namespaced_config_map,
            "Deployment": self._apps.patch_namespaced_deployment,
            "Service": self._core.patch_namespaced_service,
        }
        if kind not in methods:
            raise ValueError(f"cannot apply a {kind}")
        return methods[kind]

    def delete_service(self, namespace: str, name: str) -> None:
        """Delete Service ``namespace/name`` (nothing when there is none)."""
        self._call(
            f"delete service {namespace}/{name}",
            self._core.delete_namespaced_service,
            name,
            namespace,
        )

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

"""Pure builders of the Kubernetes objects the operator owns for each ``Agent``.

Every function here takes parsed models and plain values and returns a manifest (a ``dict``) or
a verdict; none talks to the API server, reads a file or looks at the clock, so the same input
always gives the same output and each builder is tested without a cluster. The kopf handlers
call them: parse the resource, build, apply, report status.

What an agent runs as:

* a ``v1/Secret`` ``<name>-mas-credentials`` holding the agent's key, identity token, trusted
  anchor keys, ``redis-url`` (the Redis URL with the agent's ACL user and password) and
  ``api-token`` (the token the agent presents to its sidecar's API);
* an ``apps/v1/Deployment`` ``<name>`` whose pods run the agent container next to the policing
  sidecar. Only the sidecar mounts the Secret: every file above, read-only, at
  :data:`CREDENTIALS_DIR` (the layout of :mod:`mas_core.identity.credentials`; the Redis URL and the
  API token named by ``MAS_REDIS_URL_FILE`` and ``MAS_SIDECAR_TOKEN_FILE``, never in an environment
  variable). The agent container gets ``MAS_SIDECAR_URL``, ``MAS_AGENT_ID`` and the one key
  ``api-token`` as ``MAS_SIDECAR_TOKEN`` (a ``secretKeyRef``: the kubelet hands it that value
  and nothing else of the Secret), never a Redis credential or a key;
* a ``v1/Secret`` ``<name>-mas-remotes`` (:mod:`mas_operator.remotes`): the bearer tokens of the
  ExternalAgents this agent's policy lets it call, mounted whole into the sidecar only at
  :data:`A2A_REMOTES_DIR` (``MAS_A2A_REMOTES_DIR``), so the kubelet brings a changed token to the
  running sidecar.

The spec's pod settings go to the pod (image pull Secrets, affinity, topology spread, priority
class, pod labels and annotations beside the operator's) or to the agent container alone (its
``env`` with ``valueFrom`` references, which the kubelet resolves, and ``envFrom``): the sidecar
gets none of them. Both containers run under Kubernetes' *restricted* Pod Security Standard:
non-root, no privilege escalation, no capabilities, the runtime's seccomp profile, a read-only
root filesystem (the agent's may be writable: ``spec.securityContext``). :func:`refusals` is
what a spec may not ask for (another agent's credentials, the node's filesystem or network, the
operator's service account, ...); :func:`deployment` builds nothing from a spec it refuses. The
status is built in :mod:`mas_operator.status`.
"""

from __future__ import annotations

import hashlib
import json
import re
from base64 import b64encode
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mas_core.a2a_remotes import REMOTES_DIR_ENV
from mas_core.identity.credentials import (
    AGENT_KEY_FILE,
    API_TOKEN_FILE,
    REDIS_URL_FILE,
    TOKEN_FILE,
    TRUST_DIR,
)
from mas_core.manifests import (
    AGENT_KIND,
    API_VERSION,
    CONTROL_PLANE_ENV,
    NON_ROOT_ID,
    AgentManifest,
    EnvVar,
)
from mas_core.sidecar_token import TOKEN_ENV, TOKEN_FILE_ENV
from mas_operator.config import OperatorConfig

Manifest = dict[str, Any]

CREDENTIALS_DIR = "/var/run/mas/credentials"
CREDENTIALS_VOLUME = "mas-credentials"
A2A_CLIENTS_DIR = "/var/run/mas/a2a-clients"
A2A_CLIENTS_VOLUME = "mas-a2a-clients"
# The external agents' tokens this agent's policy lets it call (:mod:`mas_operator.remotes`).
A2A_REMOTES_DIR = "/var/run/mas/a2a-remotes"
A2A_REMOTES_VOLUME = "mas-a2a-remotes"
REMOTES_SECRET_SUFFIX = "-mas-remotes"
A2A_PORT_NAME = "a2a"
A2A_SERVICE_SUFFIX = "-a2a"
SECRET_SUFFIX = "-mas-credentials"
AGENT_CONTAINER = "agent"
SIDECAR_CONTAINER = "mas-sidecar"
# The container port of the sidecar's probes' listener; the chart's PodMonitor scrapes it.
METRICS_PORT_NAME = "mas-metrics"
SPEC_HASH_ANNOTATION = "mas.dev/spec-hash"
AGENT_LABEL = "mas.dev/agent"
SIDECAR_USER = NON_ROOT_ID  # an unprivileged uid/gid for the sidecar, whatever its image declares
CREDENTIAL_FILE_MODE = 0o444  # root-owned files; only the sidecar container mounts them
# Spec fields that do not shape a pod: scaling must not restart pods, local mode is not ours.
_UNHASHED = frozenset({"replicas", "local", "deletionPolicy"})
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# The volume types of the restricted Pod Security Standard; hostPath only where the settings say.
RESTRICTED_VOLUME_TYPES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
_RUNTIME_DEFAULT = {"type": "RuntimeDefault"}
# Pod annotations an Agent may not set: the operator's own, and those that loosen the AppArmor or
# seccomp profile (which the restricted standard fixes) on the Kubernetes versions reading them.
RESERVED_ANNOTATION_PREFIXES = (
    "mas.dev/",
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)
SYSTEM_PRIORITY_PREFIX = "system-"  # system-cluster-critical, system-node-critical


class BuildError(ValueError):
    """The Agent cannot be turned into Kubernetes objects (e.g. it has no ``spec.image``)."""


class PodRefused(BuildError):
    """The Agent's spec asks for what an Agent may not get in a pod (see :func:`refusals`)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


# -- names and labels ---------------------------------------------------------------------------


def secret_name(agent: AgentManifest) -> str:
    """Name of the agent's credentials Secret."""
    return f"{agent.metadata.name}{SECRET_SUFFIX}"


def remotes_secret_name(agent: AgentManifest) -> str:
    """Name of the Secret of the external agents' tokens for the agent's sidecar."""
    return f"{agent.metadata.name}{REMOTES_SECRET_SUFFIX}"


def agent_labels(agent: AgentManifest) -> dict[str, str]:
    """Labels of every object made for ``agent`` and of its pods."""
    name = agent.metadata.name
    return {
        "app.kubernetes.io/name": "mas-agent",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "mas-operator",
        AGENT_LABEL: name,
    }


def selector_labels(agent: AgentManifest) -> dict[str, str]:
    """The Deployment's selector: a fixed subset of :func:`agent_labels` (selectors are
    immutable, so it never grows)."""
    return {"app.kubernetes.io/name": "mas-agent", AGENT_LABEL: agent.metadata.name}


def owner_reference(*, agent: AgentManifest, owner_uid: str) -> Manifest:
    """An ownerReference to the ``Agent``: its objects are garbage-collected with it."""
    return {
        "apiVersion": API_VERSION,
        "kind": AGENT_KIND,
        "name": agent.metadata.name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_metadata(agent: AgentManifest, name: str, owner_uid: str) -> Manifest:
    """The metadata of object ``name`` made for ``agent``: its namespace, labels and owner."""
    return {
        "name": name,
        "namespace": agent.metadata.namespace,
        "labels": agent_labels(agent),
        "ownerReferences": [owner_reference(agent=agent, owner_uid=owner_uid)],
    }


# -- the credentials Secret ---------------------------------------------------------------------


def trust_secret_key(kid: str) -> str:
    """The Secret key holding the anchor key ``kid`` (``trust/<kid>.pub`` once mounted)."""
    return f"{TRUST_DIR}.{kid}.pub"


def _secret_key(path: str) -> str:
    """The Secret key of a credential file named by its path in the credentials directory."""
    if path.startswith(f"{TRUST_DIR}/"):
        kid = path[len(TRUST_DIR) + 1 :].removesuffix(".pub")
        if not path.endswith(".pub") or not kid:
            raise BuildError(f"{path!r}: trusted anchor keys are named {TRUST_DIR}/<kid>.pub")
        key = trust_secret_key(kid)
    else:
        key = path
    if not _SECRET_KEY.match(key) or len(key) > 253:
        raise BuildError(f"{path!r} cannot be a Secret key")
    return key


def credentials_secret(
    *, agent: AgentManifest, owner_uid: str, files: Mapping[str, bytes]
) -> Manifest:
    """The agent's credentials Secret.

    ``files`` maps a path in the credentials directory of :mod:`mas_core.identity.credentials`
    (``agent.key``, ``token``, ``trust/<kid>.pub``, ``redis-url``, ``api-token``, optionally
    ``agent.pub``) to its content. In the Secret, ``trust/<kid>.pub`` becomes the key
    ``trust.<kid>.pub`` (see :func:`trust_secret_key`).
    """
    required = (AGENT_KEY_FILE, TOKEN_FILE, REDIS_URL_FILE, API_TOKEN_FILE)
    missing = [name for name in required if name not in files]
    if missing:
        raise BuildError(f"the credentials lack {', '.join(missing)}")
    if not any(path.startswith(f"{TRUST_DIR}/") for path in files):
        raise BuildError(f"the credentials trust no anchor ({TRUST_DIR}/<kid>.pub)")
    data = {
        _secret_key(path): b64encode(content).decode("ascii") for path, content in files.items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(agent, secret_name(agent), owner_uid),
        "type": "Opaque",
        "data": dict(sorted(data.items())),
    }


# -- the Deployment -----------------------------------------------------------------------------


def spec_hash(agent: AgentManifest) -> str:
    """A stable hash (16 hex digits) of the pod-shaping part of ``agent.spec``.

    ``replicas``, ``local`` and ``deletionPolicy`` are left out: scaling or a local-mode
    setting must not roll the pods.
    """
    spec = agent.spec.model_dump(mode="json", by_alias=True)
    shaped = {key: value for key, value in spec.items() if key not in _UNHASHED}
    text = json.dumps(shaped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _probe(path: str, port: int, *, period: int, failures: int) -> Manifest:
    """An HTTP probe of the sidecar's ``path`` on its probes' listener (``MAS_METRICS_ADDRESS``,
    the pod's address, which the kubelet reaches with or without ``hostNetwork``)."""
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _credential_items(trust_kids: Sequence[str]) -> list[Manifest]:
    items = [
        {"key": name, "path": name}
        for name in (AGENT_KEY_FILE, TOKEN_FILE, REDIS_URL_FILE, API_TOKEN_FILE)
    ]
    items += [
        {"key": trust_secret_key(kid), "path": f"{TRUST_DIR}/{kid}.pub"}
        for kid in sorted(set(trust_kids))
    ]
    return items


def _sidecar_container(
    agent: AgentManifest, settings: OperatorConfig, trust_kids: Sequence[str]
) -> Manifest:
    spec = agent.spec
    port, metrics_port = spec.sidecar.port, spec.sidecar.metrics_port
    replication = (
        [
            {"name": "MAS_REDIS_WAIT_REPLICAS", "value": str(settings.wait_replicas)},
            {"name": "MAS_REDIS_WAIT_TIMEOUT_MS", "value": str(settings.wait_timeout_ms)},
        ]
        if settings.wait_replicas
        else []
    )
    return {
        "name": SIDECAR_CONTAINER,
        "image": spec.sidecar.image or settings.sidecar_image,
        "command": ["mas", "sidecar", "--agent-id", agent.agent_id, "--port", str(port)],
        "env": [
            {"name": "MAS_REDIS_URL_FILE", "value": f"{CREDENTIALS_DIR}/{REDIS_URL_FILE}"},
            {"name": TOKEN_FILE_ENV, "value": f"{CREDENTIALS_DIR}/{API_TOKEN_FILE}"},
            {"name": "MAS_CREDENTIALS_DIR", "value": CREDENTIALS_DIR},
            {"name": "MAS_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MAS_CAPABILITIES", "value": ",".join(spec.capabilities)},
            {"name": "MAS_ROLES", "value": ",".join(spec.roles)},
            {"name": "MAS_MAX_ATTEMPTS", "value": str(spec.delivery.max_attempts)},
            {"name": "MAS_LEASE_MS", "value": str(spec.delivery.lease_seconds * 1000)},
            {"name": "MAS_METRICS_ADDRESS", "value": f"0.0.0.0:{metrics_port}"},
            {"name": REMOTES_DIR_ENV, "value": A2A_REMOTES_DIR},
            *replication,
            *_a2a_env(agent),
            *_observability_env(settings, sidecar=True),
        ],
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": metrics_port, "protocol": "TCP"},
            *(
                [{"name": A2A_PORT_NAME, "containerPort": spec.a2a.port, "protocol": "TCP"}]
                if spec.a2a is not None and spec.a2a.expose
                else []
            ),
        ],
        "volumeMounts": [
            {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True},
            {"name": A2A_REMOTES_VOLUME, "mountPath": A2A_REMOTES_DIR, "readOnly": True},
            *(
                [{"name": A2A_CLIENTS_VOLUME, "mountPath": A2A_CLIENTS_DIR, "readOnly": True}]
                if _exposed(agent)
                else []
            ),
        ],
        "livenessProbe": _probe("/healthz", metrics_port, period=10, failures=3),
        "readinessProbe": _probe("/readyz", metrics_port, period=5, failures=2),
        "securityContext": {
            **_restricted_container(read_only_root_filesystem=True),
            "runAsUser": SIDECAR_USER,
            "runAsGroup": SIDECAR_USER,
        },
    }


# -- A2A ----------------------------------------------------------------------------------------


def _exposed(agent: AgentManifest) -> bool:
    return agent.spec.a2a is not None and agent.spec.a2a.expose


def a2a_service_name(agent: AgentManifest) -> str:
    """Name of the Service of an exposed agent's A2A port."""
    return f"{agent.metadata.name}{A2A_SERVICE_SUFFIX}"


def a2a_url(agent: AgentManifest) -> str:
    """The A2A endpoint the agent card names: its Service, in cluster DNS."""
    assert agent.spec.a2a is not None
    namespace = agent.metadata.namespace
    return f"http://{a2a_service_name(agent)}.{namespace}.svc:{agent.spec.a2a.port}/"


def _a2a_env(agent: AgentManifest) -> list[Manifest]:
    """The sidecar's A2A settings: ``spec.a2a`` (no key in it: the clients' Secrets are only
    named), and for an exposed agent where it listens (every address of the pod), the URL its
    card names and where the clients' keys are mounted."""
    a2a = agent.spec.a2a
    if a2a is None:
        return []
    settings = json.dumps(a2a.model_dump(mode="json", by_alias=True), separators=(",", ":"))
    env: list[Manifest] = [{"name": "MAS_A2A", "value": settings}]
    if a2a.expose:
        env += [
            {"name": "MAS_A2A_HOST", "value": "0.0.0.0"},
            {"name": "MAS_A2A_URL", "value": a2a_url(agent)},
            {"name": "MAS_A2A_CLIENTS_DIR", "value": A2A_CLIENTS_DIR},
        ]
    return env


def _a2a_clients_volume(agent: AgentManifest) -> Manifest:
    """The clients' API keys, one file per client named after it, from their Secrets (mounted
    into the sidecar only)."""
    assert agent.spec.a2a is not None
    sources = [
        {
            "secret": {
                "name": client.secret_key_ref.name,
                "items": [{"key": client.secret_key_ref.key, "path": client.name}],
                "optional": client.secret_key_ref.optional,
            }
        }
        for client in agent.spec.a2a.clients
    ]
    return {
        "name": A2A_CLIENTS_VOLUME,
        "projected": {"sources": sources, "defaultMode": CREDENTIAL_FILE_MODE},
    }


def a2a_service(*, agent: AgentManifest, owner_uid: str) -> Manifest:
    """The Service of an exposed agent's A2A port, over its pods."""
    assert agent.spec.a2a is not None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(agent, a2a_service_name(agent), owner_uid),
        "spec": {
            "selector": selector_labels(agent),
            "ports": [
                {
                    "name": A2A_PORT_NAME,
                    "port": agent.spec.a2a.port,
                    "targetPort": A2A_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
            # Tasks live in the replica that took the call: GetTask must find it there.
            "sessionAffinity": "ClientIP",
        },
    }


def _restricted_container(*, read_only_root_filesystem: bool) -> Manifest:
    """A container securityContext within the restricted Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": read_only_root_filesystem,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(_RUNTIME_DEFAULT),
    }


def _pod_security_context(agent: AgentManifest) -> Manifest:
    """The pod's securityContext: the user and groups of ``spec.securityContext`` (the agent
    container's; the sidecar sets its own), never root, the runtime's seccomp profile."""
    wanted = agent.spec.security_context
    context: Manifest = {
        "runAsNonRoot": True,
        "runAsUser": wanted.run_as_user,
        "runAsGroup": wanted.run_as_group,
    }
    if wanted.fs_group is not None:
        context["fsGroup"] = wanted.fs_group
    context["seccompProfile"] = dict(_RUNTIME_DEFAULT)
    return context


def _env_var(var: EnvVar) -> Manifest:
    """A ``spec.env`` entry as the container's core/v1 EnvVar: a value or a reference, which the
    kubelet resolves (the operator never reads what it points at)."""
    if var.value_from is None:
        return {"name": var.name, "value": var.value}
    source = var.value_from.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
    )
    return {"name": var.name, "valueFrom": source}


def _observability_env(settings: OperatorConfig, *, sidecar: bool) -> list[Manifest]:
    """The sidecar's log format (as the operator's own), and for the sidecar and the agent's
    SDK the OTLP collector to export spans to, when the operator is given one."""
    env: list[Manifest] = []
    if sidecar and settings.log_format != "text":
        env.append({"name": "MAS_LOG_FORMAT", "value": settings.log_format})
    if settings.otlp_endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": settings.otlp_endpoint})
    return env


def _agent_container(agent: AgentManifest, settings: OperatorConfig) -> Manifest:
    spec = agent.spec
    if not spec.image:
        raise BuildError(f"agent {agent.agent_id} has no spec.image")
    env = [_env_var(var) for var in spec.env if var.name not in CONTROL_PLANE_ENV]
    env += [
        {"name": "MAS_SIDECAR_URL", "value": f"http://127.0.0.1:{spec.sidecar.port}"},
        {"name": "MAS_AGENT_ID", "value": agent.agent_id},
        {
            # One key of the credentials Secret, as a value: the agent mounts nothing of it.
            "name": TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret_name(agent), "key": API_TOKEN_FILE}},
        },
    ]
    own = {var.name for var in spec.env}  # the agent's own OTEL_* settings win
    env += [var for var in _observability_env(settings, sidecar=False) if var["name"] not in own]
    container: Manifest = {
        "name": AGENT_CONTAINER,
        "image": spec.image,
        "env": env,
        "securityContext": _restricted_container(
            read_only_root_filesystem=spec.security_context.read_only_root_filesystem
        ),
    }
    if spec.env_from:
        # Listed before env in the container, which wins over it: the control plane's variables
        # above cannot be replaced by a key of these.
        container["envFrom"] = [
            source.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
            for source in spec.env_from
        ]
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.resources:
        container["resources"] = dict(spec.resources)
    if spec.volume_mounts:
        container["volumeMounts"] = [dict(mount) for mount in spec.volume_mounts]
    return container


def _strategy(host_network: bool) -> Manifest:
    """Rolling updates; on the host network a new pod cannot start beside an old one on the same
    node (the sidecar port is taken), so one old pod goes first instead of a surge."""
    if host_network:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def deployment(
    *,
    agent: AgentManifest,
    owner_uid: str,
    settings: OperatorConfig,
    spec_hash: str,
    trust_kids: Sequence[str],
) -> Manifest:
    """The agent's Deployment: the agent container next to its sidecar.

    ``settings`` are the operator's: its default sidecar image (``spec.sidecar.image`` wins) and
    what Agents may ask for; a spec with any of :func:`refusals` raises :class:`PodRefused`.
    ``spec_hash`` is :func:`spec_hash` of the agent, put on the pod template so a spec change
    rolls the pods; ``trust_kids`` are the anchor key ids in the credentials Secret, each
    projected as ``trust/<kid>.pub`` (a key listed here must exist in the Secret, or the pods
    cannot start).
    """
    refused = refusals(agent, settings)
    if refused:
        raise PodRefused(refused)
    spec = agent.spec
    volumes: list[Manifest] = [
        {
            "name": CREDENTIALS_VOLUME,
            "secret": {
                "secretName": secret_name(agent),
                "defaultMode": CREDENTIAL_FILE_MODE,
                "items": _credential_items(trust_kids),
            },
        },
        # Mounted whole: the operator adds and removes tokens as ExternalAgents and policies
        # change, and the kubelet updates the files without restarting the pod. Optional, so a
        # pod never waits for it.
        {
            "name": A2A_REMOTES_VOLUME,
            "secret": {
                "secretName": remotes_secret_name(agent),
                "defaultMode": CREDENTIAL_FILE_MODE,
                "optional": True,
            },
        },
    ]
    if _exposed(agent):
        volumes.append(_a2a_clients_volume(agent))
    volumes += [dict(volume) for volume in spec.volumes]
    pod: Manifest = {
        "containers": [
            _agent_container(agent, settings),
            _sidecar_container(agent, settings, trust_kids),
        ],
        "volumes": volumes,
        "securityContext": _pod_security_context(agent),
    }
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    else:
        # Least privilege: no Kubernetes API token in the pod unless the spec names an account.
        pod["automountServiceAccountToken"] = False
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(toleration) for toleration in spec.tolerations]
    if spec.host_network:
        pod["hostNetwork"] = True
        pod["dnsPolicy"] = "ClusterFirstWithHostNet"
    if spec.host_aliases:
        pod["hostAliases"] = [
            {"ip": alias.ip, "hostnames": list(alias.hostnames)} for alias in spec.host_aliases
        ]
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    if spec.affinity:
        pod["affinity"] = dict(spec.affinity)
    if spec.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [dict(c) for c in spec.topology_spread_constraints]
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(agent, agent.metadata.name, owner_uid),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(agent)},
            "strategy": _strategy(spec.host_network),
            "template": {
                "metadata": {
                    # The operator's labels and annotation win (refusals() says so first).
                    "labels": {**spec.pod_labels, **agent_labels(agent)},
                    "annotations": {**spec.pod_annotations, SPEC_HASH_ANNOTATION: spec_hash},
                },
                "spec": pod,
            },
        },
    }


# -- what a spec may ask for --------------------------------------------------------------------


def refusals(agent: AgentManifest, settings: OperatorConfig) -> list[str]:
    """What ``agent.spec`` asks for that an Agent may not get in a pod, one reason per item,
    each naming the field; empty when the spec is acceptable under the operator's ``settings``.

    Whoever may write Agents in a namespace must get through the operator no more than the
    restricted Pod Security Standard gives a pod, and no other agent's identity:

    * no Secret named ``*-mas-credentials`` (an agent's key, token and Redis password, for its
      sidecar only; the agent's own included) or ``*-mas-remotes`` (the external agents'
      tokens, likewise), whether a ``secret`` volume, a ``projected``
      source or a ``csi`` volume's ``nodePublishSecretRef``; in the operator's namespace no
      Secret at all (the trust anchor's signing key, the Redis administrator password);
    * volume types of the restricted standard only: no ``hostPath`` unless
      ``settings.allow_host_path``, nothing else (``nfs``, ``iscsi``, ... — a
      ``persistentVolumeClaim`` reaches such storage through a volume an administrator made);
    * no volume named like the sidecar's credentials volume, and no mount of a volume that
      ``spec.volumes`` does not declare (that credentials volume);
    * ``spec.hostNetwork`` only with ``settings.allow_host_network``;
    * ``spec.sidecar.image`` other than the operator's only with
      ``settings.allow_sidecar_image``: the sidecar holds the credentials and runs the sender's
      gateway checks;
    * not the operator's own service account (``serviceAccountName`` in its namespace);
    * the same Secrets as volumes, by reference: no ``spec.env[].valueFrom.secretKeyRef``,
      ``spec.envFrom[].secretRef`` or ``spec.imagePullSecrets`` entry naming such a Secret
      or, in the operator's namespace, any Secret;
    * pod labels and annotations that would pass for the operator's: no ``spec.podLabels`` key
      the operator sets on the pods (another agent's ``mas.dev/agent`` would put the pods
      behind that agent's selectors) or under ``mas.dev/``, no ``spec.podAnnotations`` key of
      :data:`RESERVED_ANNOTATION_PREFIXES` (an ``unconfined`` AppArmor or seccomp profile);
    * no ``system-`` PriorityClass, which lets a pod preempt the cluster's own components.

    ``spec.securityContext`` needs no check: its model cannot express root, privileges or
    capabilities. Secrets are matched by name, which is what the kubelet mounts, not by labels
    anyone who may write that Secret could change.
    """
    spec = agent.spec
    namespace = agent.metadata.namespace
    reasons: list[str] = []
    declared: set[str] = set()
    for index, volume in enumerate(spec.volumes):
        name = volume.get("name")
        if isinstance(name, str) and name != CREDENTIALS_VOLUME:
            declared.add(name)
        reasons += _volume_refusals(f"spec.volumes[{index}]", volume, namespace, settings)
    for index, mount in enumerate(spec.volume_mounts):
        name = mount.get("name")
        if name not in declared:
            what = "the sidecar's credentials volume" if name == CREDENTIALS_VOLUME else "a volume"
            reasons.append(
                f"spec.volumeMounts[{index}]: mounts {what} {name!r} that spec.volumes does not "
                "declare"
            )
    if spec.host_network and not settings.allow_host_network:
        reasons.append(
            "spec.hostNetwork: the node's network namespace is refused unless the operator "
            "allows it (MAS_ALLOW_HOST_NETWORK)"
        )
    image = spec.sidecar.image
    if image and image != settings.sidecar_image and not settings.allow_sidecar_image:
        reasons.append(
            f"spec.sidecar.image: {image!r} is not the operator's sidecar image; the sidecar "
            "holds the agent's credentials and runs the gateway checks, so another image is "
            "refused unless the operator allows it (MAS_ALLOW_SIDECAR_IMAGE)"
        )
    if (
        namespace == settings.operator_namespace
        and spec.service_account_name == settings.operator_service_account
    ):
        reasons.append(
            f"spec.serviceAccountName: {spec.service_account_name} is the operator's own "
            "service account; its permissions are not for agents"
        )
    for where, secret in _referenced_secrets(agent):
        reasons += secret_refusals(where, secret, namespace, settings, "receive")
    reserved = set(agent_labels(agent))
    for key in sorted(spec.pod_labels):
        if key in reserved or key.startswith("mas.dev/"):
            reasons.append(
                f"spec.podLabels: {key} is set by the operator on the agent's pods (selectors "
                "find an agent's pods by it)"
            )
    for key in sorted(spec.pod_annotations):
        if key.startswith(RESERVED_ANNOTATION_PREFIXES):
            reasons.append(
                f"spec.podAnnotations: {key} is reserved: the operator's own, or one that "
                "changes the AppArmor or seccomp profile the restricted standard fixes"
            )
    priority = spec.priority_class_name
    if priority and priority.startswith(SYSTEM_PRIORITY_PREFIX):
        reasons.append(
            f"spec.priorityClassName: {priority} is for the cluster's own components (its pods "
            "preempt any other); give agents a PriorityClass of their own"
        )
    return reasons


def _referenced_secrets(agent: AgentManifest) -> Iterator[tuple[str, str]]:
    """``(field, Secret name)`` of every Secret the spec hands the pod by reference (not as a
    volume): its variables' ``secretKeyRef``, its ``envFrom`` Secrets, the image pull Secrets,
    and its A2A clients' keys (the sidecar's, mounted by the operator's own volume)."""
    spec = agent.spec
    for index, var in enumerate(spec.env):
        source = var.value_from.secret_key_ref if var.value_from is not None else None
        if source is not None:
            yield f"spec.env[{index}] ({var.name}).valueFrom.secretKeyRef", source.name
    for index, env_from in enumerate(spec.env_from):
        if env_from.secret_ref is not None:
            yield f"spec.envFrom[{index}].secretRef", env_from.secret_ref.name
    for index, ref in enumerate(spec.image_pull_secrets):
        yield f"spec.imagePullSecrets[{index}]", ref.name
    for index, client in enumerate(spec.a2a.clients if spec.a2a is not None else ()):
        yield f"spec.a2a.clients[{index}] ({client.name}).secretKeyRef", client.secret_key_ref.name


def secret_refusals(
    where: str, secret: str, namespace: str, settings: OperatorConfig, how: str
) -> Iterator[str]:
    """Why Secret ``secret`` may not reach an agent's pod or, named by an ExternalAgent, a remote
    (``how``: mount, receive or send)."""
    if secret.endswith((SECRET_SUFFIX, REMOTES_SECRET_SUFFIX)):
        yield (
            f"{where}: Secret {secret} holds an agent's credentials, which only its sidecar "
            f"may {how}"
        )
    elif namespace == settings.operator_namespace:
        yield (
            f"{where}: Secret {secret} is in the operator's namespace, whose Secrets (the "
            f"trust anchor's key, the Redis administrator password) no agent may {how}"
        )


def _volume_refusals(
    where: str, volume: Mapping[str, Any], namespace: str, settings: OperatorConfig
) -> Iterator[str]:
    name = volume.get("name")
    if name in (CREDENTIALS_VOLUME, A2A_CLIENTS_VOLUME, A2A_REMOTES_VOLUME):
        yield f"{where}: the name {name} is reserved for the sidecar's secrets"
    where = f"{where} ({name})"
    for kind in sorted(set(volume) - {"name"}):
        if kind == "hostPath":
            if not settings.allow_host_path:
                yield (
                    f"{where}: hostPath volumes expose the node's filesystem and are refused "
                    "unless the operator allows them (MAS_ALLOW_HOST_PATH)"
                )
        elif kind not in RESTRICTED_VOLUME_TYPES:
            yield (
                f"{where}: {kind} volumes are refused; the restricted Pod Security Standard "
                f"allows {', '.join(RESTRICTED_VOLUME_TYPES)}"
            )
    for secret in _secret_names(volume):
        yield from secret_refusals(where, secret, namespace, settings, "mount")


def _secret_names(volume: Mapping[str, Any]) -> Iterator[str]:
    """The Secrets a volume makes the kubelet read: its own, its projected sources', and the one
    a CSI volume hands its driver."""
    references = [
        _field(volume, "secret", "secretName"),
        _field(volume, "csi", "nodePublishSecretRef", "name"),
    ]
    sources = _field(volume, "projected", "sources")
    if isinstance(sources, list):
        references += [_field(source, "secret", "name") for source in sources]
    yield from (name for name in references if isinstance(name, str))


def _field(node: Any, *path: str) -> Any:
    """``node[path[0]][path[1]]...``, or None where a part is missing or not a mapping."""
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node

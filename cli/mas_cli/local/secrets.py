"""What ``mas up`` puts in place of an agent's ``spec.env[].valueFrom``: a local secrets file, the
replica, or its own environment.

On Kubernetes the kubelet resolves ``valueFrom`` (a Secret's key, a ConfigMap's key, a field of
the pod). Locally there is no API server, so ``mas up`` resolves each reference itself, before
anything starts:

* ``secretKeyRef {name: S, key: K}``: the line ``S/K=value`` of the secrets file (``DIR/.secrets``
  when it exists, or the file ``--secrets`` names), else the variable of the same name in
  ``mas up``'s own environment;
* ``fieldRef`` ``metadata.name`` is the replica's name (``<agent>-<index>``, as a pod's is unique),
  ``metadata.namespace`` the agent's namespace;
* anything else (a ``configMapKeyRef``, another field, a ``resourceFieldRef``) is taken from the
  variable of the same name in ``mas up``'s environment.

A reference found nowhere is refused with a :class:`~mas_core.manifests.ManifestError` naming the
variable and where its value may come from, unless it is ``optional``: then the variable is left
unset. ``spec.envFrom`` is a Kubernetes-only setting and ignored here, like ``spec.image``.

The secrets file has one ``secret-name/key=value`` per line; blank lines and lines starting with
``#`` are skipped; the value is everything after the first ``=``, as it is (no quotes, no
escapes). Values reach only the agent programs whose ``spec.env`` names them (never a sidecar,
never another agent), and no message here ever carries one. Used by :mod:`mas_cli.up_command`
(which reads the file) and :mod:`mas_cli.local.plan` (which resolves each replica's variables).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mas_core.manifests import AgentManifest, EnvVar, ManifestError

SECRETS_FILE = ".secrets"  # in the manifests' directory, read when it exists
_LINE = re.compile(r"^(?P<secret>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)/(?P<key>[-._a-zA-Z0-9]+)=")


@dataclass(frozen=True)
class LocalSecrets:
    """The values of a secrets file, by ``(secret, key)``, and where they came from."""

    values: Mapping[tuple[str, str], str] = field(default_factory=dict)
    source: Path | None = None

    def __repr__(self) -> str:  # never the values
        return f"LocalSecrets({len(self.values)} keys from {self.source})"

    @classmethod
    def read(cls, path: Path) -> LocalSecrets:
        """Parse ``path``; :class:`ManifestError` (naming the line, never its value) when a
        line is not ``secret-name/key=value`` or the file cannot be read."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read the secrets file: {exc}") from None
        values: dict[tuple[str, str], str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _LINE.match(line)
            if match is None:
                raise ManifestError(
                    f"{path}: line {number}: not secret-name/key=value (a Secret's name, '/', "
                    "one of its keys, '=', the value)"
                )
            values[(match["secret"], match["key"])] = line[match.end() :]
        return cls(values, path)

    def readable_by_others(self) -> bool:
        """Whether the file grants its group or others any access (worth a warning)."""
        if self.source is None:
            return False
        try:
            mode = self.source.stat().st_mode
        except OSError:
            return False
        return bool(stat.S_IMODE(mode) & 0o077)


def load_secrets(directory: Path, path: Path | None) -> LocalSecrets:
    """The secrets of a run: the file ``path`` names (which must exist), else
    ``directory/.secrets`` when it exists, else none."""
    if path is not None:
        return LocalSecrets.read(path)
    default = directory / SECRETS_FILE
    return LocalSecrets.read(default) if default.is_file() else LocalSecrets()


@dataclass(frozen=True)
class EnvReferences:
    """Resolves ``spec.env`` references for ``mas up``: the secrets file, then ``environ``
    (``mas up``'s environment)."""

    secrets: LocalSecrets = field(default_factory=LocalSecrets)
    environ: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the values
        return f"EnvReferences({self.secrets!r})"

    def value(self, agent: AgentManifest, var: EnvVar, replica: str, where: str) -> str | None:
        """The value of ``var`` (an entry of ``agent``'s ``spec.env``, at ``where``) in replica
        ``replica``; None when it is an optional reference found nowhere."""
        source = var.value_from
        if source is None:
            return var.value
        if source.field_ref is not None:
            fields = {"metadata.name": replica, "metadata.namespace": agent.metadata.namespace}
            if source.field_ref.field_path in fields:
                return fields[source.field_ref.field_path]
        ref = source.secret_key_ref
        if ref is not None and (ref.name, ref.key) in self.secrets.values:
            return self.secrets.values[(ref.name, ref.key)]
        if var.name in self.environ:
            return self.environ[var.name]
        optional = ref or source.config_map_key_ref
        if optional is not None and optional.optional:
            return None
        if ref is not None:
            file = self.secrets.source or f"DIR/{SECRETS_FILE}"
            missing = (
                f"Secret {ref.name} key {ref.key} has no local value: add the line "
                f"{ref.name}/{ref.key}=... to {file} (or the file --secrets names), or set "
                f"{var.name} in mas up's environment"
            )
        else:
            missing = (
                f"mas up cannot resolve this valueFrom locally; set {var.name} in its "
                "environment (or mark the reference optional)"
            )
        raise ManifestError(f"{where} ({var.name}): {missing}")

"""``mas-operator bootstrap``: create the trust anchor's and the Redis password's Secrets, once.

The Helm chart runs this in a pre-install / pre-upgrade hook Job, before the operator and the
embedded Redis start. Both Secrets are made inside the cluster, from a random source in the
Job, and only when absent: an existing one (from an earlier install, made by hand, or the
trust anchor the operator creates when run without the chart) is kept as it is, once checked
to hold what the operator and Redis need. Nothing is ever rewritten, so a chart rendered any
number of times (``helm template`` under GitOps, where ``lookup`` sees nothing) renders the
same objects, and identities and the Redis password stay valid.

Why a hook Job: the embedded Redis needs its password before it can start, and the operator
needs both it and the anchor, so the Secrets must exist before either runs; templates
(``genPrivateKey``, ``randAlphaNum``, ``lookup``) re-run at every render; and the operator
itself, which runs for good with cluster-wide rights, gains none. The Job's service account may
create Secrets in the release namespace and read or annotate these two only, and Helm deletes
it with the Job once it succeeded.

The Secrets belong to no release, so ``helm uninstall`` leaves them (and the Redis data) in
place; they also carry ``helm.sh/resource-policy: keep``, which this adds to Secrets an earlier
chart rendered itself, so that upgrading from it does not delete them. Deleting them is a
deliberate ``kubectl delete secret``; a new anchor invalidates every agent's identity until the
operator reissues them.

Called by :func:`mas_operator.run.main` (``mas-operator bootstrap --namespace NS ...``).
"""

from __future__ import annotations

import argparse
import sys
from base64 import b64encode
from collections.abc import Sequence

from mas_core.acl import generate_password
from mas_core.identity.credentials import new_anchor
from mas_operator.anchor import AnchorError, anchor_from_secret, anchor_secret
from mas_operator.kube import KubeApi, KubeError, Manifest, load_client

KEEP = {"helm.sh/resource-policy": "keep"}


class BootstrapError(RuntimeError):
    """A Secret exists but does not hold what it must; it is left for a human to fix."""


def kept(secret: Manifest) -> Manifest:
    """``secret`` annotated so that Helm never deletes it."""
    metadata = dict(secret["metadata"])
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **KEEP}
    return {**secret, "metadata": metadata}


def redis_password_secret(*, namespace: str, name: str, key: str, password: str) -> Manifest:
    """The Secret holding the embedded Redis's administrator ``password`` under ``key``."""
    return kept(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/component": "redis"},
            },
            "type": "Opaque",
            "data": {key: b64encode(password.encode()).decode("ascii")},
        }
    )


def _create_or_keep(kube: KubeApi, desired: Manifest) -> tuple[Manifest, bool]:
    """The Secret as it is in the cluster, and whether it was created now (``desired``)."""
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    existing = kube.get_secret(namespace, name)
    if existing is None:
        if kube.create_secret(desired) is not None:
            return desired, True
        existing = kube.get_secret(namespace, name)  # created meanwhile by another run
        if existing is None:
            raise KubeError(404, f"Secret {namespace}/{name} vanished while being created")
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if not KEEP.items() <= annotations.items():
        kube.annotate_secret(namespace, name, KEEP)
    return existing, False


def ensure_anchor(kube: KubeApi, *, namespace: str, name: str) -> str:
    """The trust anchor's Secret, created with a new key when absent; what was done."""
    fresh = new_anchor()
    secret, created = _create_or_keep(
        kube, kept(anchor_secret(namespace=namespace, name=name, anchor=fresh))
    )
    try:
        kid = anchor_from_secret(secret).kid
    except AnchorError as exc:
        raise BootstrapError(
            f"Secret {namespace}/{name} holds no usable trust anchor: {exc}"
        ) from None
    return f"{'created' if created else 'kept'} Secret {namespace}/{name} (trust anchor {kid})"


def ensure_redis_password(kube: KubeApi, *, namespace: str, name: str, key: str) -> str:
    """The Redis password's Secret, created with a new password when absent; what was done."""
    desired = redis_password_secret(
        namespace=namespace, name=name, key=key, password=generate_password()
    )
    secret, created = _create_or_keep(kube, desired)
    if not (secret.get("data") or {}).get(key):
        raise BootstrapError(f"Secret {namespace}/{name} has no {key!r} (the Redis password)")
    return f"{'created' if created else 'kept'} Secret {namespace}/{name} (Redis password)"


def parser() -> argparse.ArgumentParser:
    """The options of ``mas-operator bootstrap``."""
    bootstrap = argparse.ArgumentParser(
        prog="mas-operator bootstrap",
        description="Create the trust anchor's (and the Redis password's) Secret if absent.",
    )
    bootstrap.add_argument("--namespace", required=True, help="the operator's namespace")
    bootstrap.add_argument("--anchor-secret", required=True, help="the trust anchor's Secret")
    bootstrap.add_argument("--redis-secret", help="the Redis password's Secret (none: skip)")
    bootstrap.add_argument("--redis-password-key", default="password", help="its key")
    return bootstrap


def main(argv: Sequence[str]) -> int:
    """Run the bootstrap; 0 when both Secrets are there, 1 (saying why) otherwise."""
    args = parser().parse_args(argv)
    try:
        kube = KubeApi(load_client())
        done = [ensure_anchor(kube, namespace=args.namespace, name=args.anchor_secret)]
        if args.redis_secret:
            said = ensure_redis_password(
                kube, namespace=args.namespace, name=args.redis_secret, key=args.redis_password_key
            )
            done.append(said)
    except (KubeError, BootstrapError) as exc:
        print(f"mas-operator bootstrap: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    return 0

"""The operator's trust anchor, kept in a Secret of its own namespace.

The anchor's Ed25519 key signs every agent's identity token; sidecars trust its public key. The
Helm chart's bootstrap hook Job creates it once, before the operator starts
(:mod:`mas_operator.bootstrap`, with :func:`anchor_secret`); the operator loads it at start-up, or
creates it when the Secret does not exist (run without the chart; two replicas starting at
once: the second one's create fails with 409 and it reads the first one's key), so
tokens issued before a restart or by another replica still verify. Anchor rotation (trusting
two keys for a while) is not automated yet. Used by :mod:`mas_operator.handlers` at start-up.
"""

from __future__ import annotations

from base64 import b64decode, b64encode

from mas_core.identity.credentials import ANCHOR_KEY_FILE, ANCHOR_PUB_FILE, Anchor, new_anchor
from mas_core.identity.tokens import (
    KeyFormatError,
    load_private_key_pem,
    private_key_to_pem,
    public_key_to_pem,
)
from mas_operator.kube import KubeApi, Manifest


class AnchorError(RuntimeError):
    """The anchor Secret exists but does not hold a usable key."""


def anchor_secret(*, namespace: str, name: str, anchor: Anchor) -> Manifest:
    """The Secret holding ``anchor`` (private and public key, PEM)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/component": "trust-anchor"},
        },
        "type": "Opaque",
        "data": {
            ANCHOR_KEY_FILE: b64encode(private_key_to_pem(anchor.private_key)).decode("ascii"),
            ANCHOR_PUB_FILE: b64encode(public_key_to_pem(anchor.public_key)).decode("ascii"),
        },
    }


def anchor_from_secret(secret: Manifest) -> Anchor:
    """The anchor stored in ``secret``; :class:`AnchorError` when it holds none."""
    encoded = (secret.get("data") or {}).get(ANCHOR_KEY_FILE)
    if not encoded:
        raise AnchorError(f"the Secret has no {ANCHOR_KEY_FILE}")
    try:
        key = load_private_key_pem(b64decode(encoded))
    except (KeyFormatError, ValueError) as exc:
        raise AnchorError(f"{ANCHOR_KEY_FILE}: {exc}") from None
    return Anchor.of(key)


def load_or_create_anchor(kube: KubeApi, *, namespace: str, name: str) -> Anchor:
    """The anchor in Secret ``namespace/name``, created with a new key if there is none."""
    existing = kube.get_secret(namespace, name)
    if existing is None:
        fresh = new_anchor()
        created = kube.create_secret(anchor_secret(namespace=namespace, name=name, anchor=fresh))
        if created is not None:
            return fresh
        existing = kube.get_secret(namespace, name)
        if existing is None:
            raise AnchorError(f"Secret {namespace}/{name} vanished while being created")
    return anchor_from_secret(existing)

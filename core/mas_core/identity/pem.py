"""Ed25519 keys in PEM: unencrypted PKCS#8 private keys and SubjectPublicKeyInfo public keys.

RFC 8410 fixes the DER of both for Ed25519: a constant prefix (the algorithm identifier
``1.3.101.112`` and the lengths) followed by the 32 raw bytes (the private key's seed, the public
key). So the PEM form is written and read here exactly, with no ASN.1 library: what is written is
byte for byte what OpenSSL and ``cryptography`` write (``openssl genpkey -algorithm ed25519``),
and what is read must have that shape. Anything else (another algorithm, an encrypted key, a
PKCS#8 v2 key with its public key attached, trailing data, a second PEM block, base64 with
characters outside the alphabet) is refused with ``ValueError``. Pure; used by
:mod:`mas_core.identity.tokens`, which turns the raw bytes into PyNaCl keys.
"""

from __future__ import annotations

import base64
import binascii

# RFC 8410 §7 (OneAsymmetricKey v1, no attributes, no public key) and §4 (SubjectPublicKeyInfo).
PRIVATE_DER_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
PUBLIC_DER_PREFIX = bytes.fromhex("302a300506032b6570032100")
PRIVATE_LABEL = "PRIVATE KEY"
PUBLIC_LABEL = "PUBLIC KEY"
RAW_KEY_BYTES = 32
_LINE = 64


def encode(label: str, der: bytes) -> bytes:
    """``der`` as one PEM block with ``label`` (64-character base64 lines, final newline)."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + _LINE] for i in range(0, len(text), _LINE)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode(
        "ascii"
    )


def decode(label: str, data: bytes) -> bytes:
    """The DER inside the single PEM block ``label`` that is all of ``data`` (surrounding
    whitespace allowed); ``ValueError`` otherwise."""
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("not ASCII") from None
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if not text.startswith(begin) or not text.endswith(end):
        raise ValueError(f"not a PEM {label.lower()}")
    body = "".join(text[len(begin) : -len(end)].split())
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("the PEM body is not base64") from None


def private_key_pem(seed: bytes) -> bytes:
    """The PKCS#8 PEM of the Ed25519 private key with this 32-byte seed."""
    return encode(PRIVATE_LABEL, PRIVATE_DER_PREFIX + _raw(seed))


def public_key_pem(raw: bytes) -> bytes:
    """The SubjectPublicKeyInfo PEM of the 32-byte Ed25519 public key ``raw``."""
    return encode(PUBLIC_LABEL, PUBLIC_DER_PREFIX + _raw(raw))


def private_key_seed(data: bytes) -> bytes:
    """The 32-byte seed of the PKCS#8 PEM Ed25519 private key ``data``; ``ValueError`` for
    anything else."""
    return _strip(decode(PRIVATE_LABEL, data), PRIVATE_DER_PREFIX, "an Ed25519 private key")


def public_key_raw(data: bytes) -> bytes:
    """The 32 raw bytes of the SubjectPublicKeyInfo PEM Ed25519 public key ``data``;
    ``ValueError`` for anything else."""
    return _strip(decode(PUBLIC_LABEL, data), PUBLIC_DER_PREFIX, "an Ed25519 public key")


def _raw(key: bytes) -> bytes:
    if len(key) != RAW_KEY_BYTES:
        raise ValueError("an Ed25519 key is 32 bytes")
    return key


def _strip(der: bytes, prefix: bytes, what: str) -> bytes:
    if len(der) != len(prefix) + RAW_KEY_BYTES or not der.startswith(prefix):
        raise ValueError(f"not {what}")
    return der[len(prefix) :]

"""Identity tokens and envelope signatures (pure: no server, no files)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from mas_core.envelope import ENTRY_FIELD, Envelope, EnvelopeError
from mas_core.identity.tokens import (
    EnvelopeSignatureError,
    IdentityError,
    KeyFormatError,
    MalformedTokenError,
    SenderMismatchError,
    TokenExpiredError,
    TokenNotYetValidError,
    TokenSignatureError,
    TokenVerifier,
    UnknownKeyIdError,
    UnsignedEnvelopeError,
    b64url_decode,
    b64url_encode,
    generate_private_key,
    issue_token,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_jwk,
    public_key_to_pem,
    raw_public_bytes,
    sign_envelope,
    signing_input,
    verify_envelope,
    verify_token,
)
from mas_core.names import InvalidAgentIdError

NOW = 1_800_000_000.0
ANCHOR = generate_private_key()
ANCHORS = {key_id(ANCHOR.verify_key): ANCHOR.verify_key}
ALICE_KEY = generate_private_key()
BOB_KEY = generate_private_key()


def token_for(
    agent_id: str = "team-a/alice",
    key: SigningKey = ALICE_KEY,
    *,
    anchor: SigningKey = ANCHOR,
    ttl: int = 600,
    now: float = NOW,
) -> str:
    return issue_token(
        anchor,
        agent_id=agent_id,
        roles=["clinician"],
        capabilities=["diagnose", "triage"],
        agent_public_key=key.verify_key,
        ttl_seconds=ttl,
        now=now,
    )


def envelope(**changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "id": "01J0000000000000000000000A",
        "sender": "team-a/alice",
        "target": "team-b/bob",
        "type": "diagnose",
        "payload": {"patient": "p-1", "values": [1, 2.5, None, {"z": 1, "a": "é"}]},
        "created_at": int(NOW * 1000),
        "trace": {"traceparent": "00-abc-def-01"},
    }
    return Envelope(**(fields | changes))


def forge(token: str, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """``token`` with its header or claims replaced, keeping the old signature."""
    head, body, signature = token.split(".")
    if header is not None:
        head = b64url_encode(json.dumps(header).encode())
    if claims:
        values = json.loads(b64url_decode(body)) | claims
        body = b64url_encode(json.dumps(values).encode())
    return f"{head}.{body}.{signature}"


def resign(header: Any, claims: Any, anchor: SigningKey = ANCHOR) -> str:
    """A token with any header and claims, validly signed by ``anchor``."""
    signing = f"{b64url_encode(json.dumps(header).encode())}."
    signing += b64url_encode(json.dumps(claims).encode())
    return f"{signing}.{b64url_encode(anchor.sign(signing.encode()).signature)}"


# -- keys ---------------------------------------------------------------------------------------


def test_keys_survive_pem_round_trips_and_have_stable_short_ids() -> None:
    key = generate_private_key()
    again = load_private_key_pem(private_key_to_pem(key))
    public = load_public_key_pem(public_key_to_pem(key.verify_key))

    assert key_id(again.verify_key) == key_id(public) == key_id(key.verify_key)
    assert len(key_id(public)) == 16
    assert key_id(public) != key_id(generate_private_key().verify_key)


@pytest.mark.parametrize(
    "data", [b"", b"not pem", public_key_to_pem(ALICE_KEY.verify_key), b"-----BEGIN"]
)
def test_bytes_that_are_no_ed25519_private_key_raise_key_format_error(data: bytes) -> None:
    with pytest.raises(KeyFormatError):
        load_private_key_pem(data)


def test_a_private_key_is_no_public_key() -> None:
    with pytest.raises(KeyFormatError):
        load_public_key_pem(private_key_to_pem(ALICE_KEY))


# Written by OpenSSL (through the ``cryptography`` package) for the seed bytes(range(32)): keys
# on disk and in Secrets from any release or tool must load, and what is written must read there.
OPENSSL_PRIVATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
-----END PRIVATE KEY-----
"""
OPENSSL_PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=
-----END PUBLIC KEY-----
"""
ED448_PRIVATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MEcCAQAwBQYDK2VxBDsEOQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3OA==
-----END PRIVATE KEY-----
"""
ED448_PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoAGNCnDkKnQt+1YSeYkzhQYde02tj2/u1HkeqrZrL0pPAvwJRi
qL+xhC0LrGDoobPlW6JAfzMibzgA
-----END PUBLIC KEY-----
"""
ENCRYPTED_PEM = b"""-----BEGIN ENCRYPTED PRIVATE KEY-----
MIGjMF8GCSqGSIb3DQEFDTBSMDEGCSqGSIb3DQEFDDAkBBCqVKg170tR9X/7W0Fg
ffHEAgIIADAMBggqhkiG9w0CCQUAMB0GCWCGSAFlAwQBKgQQz/q5gleFq6TzUSCE
EtwQJgRAg8axIHmpNCNrvlvHaUSDmmdlBwj9PR7ZcIcJ9iSJcdc8lRT1MZ515rKa
AVmteIJI1sySXAeNwtTiS/kcZM7o8Q==
-----END ENCRYPTED PRIVATE KEY-----
"""


def test_keys_are_written_byte_for_byte_as_openssl_writes_them_and_read_back() -> None:
    key = SigningKey(bytes(range(32)))

    assert private_key_to_pem(key) == OPENSSL_PRIVATE_PEM
    assert public_key_to_pem(key.verify_key) == OPENSSL_PUBLIC_PEM
    assert bytes(load_private_key_pem(OPENSSL_PRIVATE_PEM)) == bytes(key)
    assert load_public_key_pem(OPENSSL_PUBLIC_PEM) == key.verify_key
    assert load_private_key_pem(b"\n" + OPENSSL_PRIVATE_PEM.replace(b"\n", b"\r\n")) is not None


def test_a_private_key_shows_no_key_material_in_str_or_repr() -> None:
    seed = bytes(range(32))
    for key in (load_private_key_pem(OPENSSL_PRIVATE_PEM), generate_private_key()):
        for shown in (str(key), repr(key), f"{key}", "%s" % key):  # noqa: UP031 - as logs do
            assert "PrivateKey object at" in shown
            assert str(seed) not in shown and str(bytes(key)) not in shown


@pytest.mark.parametrize(
    "data",
    [
        ED448_PRIVATE_PEM,
        ENCRYPTED_PEM,
        OPENSSL_PRIVATE_PEM + OPENSSL_PRIVATE_PEM,  # two blocks
        OPENSSL_PRIVATE_PEM + b"trailing",
        OPENSSL_PRIVATE_PEM.replace(b"MC4C", b"MC4*"),  # outside the base64 alphabet
        OPENSSL_PRIVATE_PEM.replace(b"HR4f", b"HR4="),  # a byte short
        OPENSSL_PRIVATE_PEM.replace(b"PRIVATE KEY", b"PUBLIC KEY"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQ\u00e9\n-----END PRIVATE KEY-----".encode(),
    ],
    ids=["ed448", "encrypted", "two-blocks", "trailing", "alphabet", "short", "label", "utf8"],
)
def test_pem_of_another_shape_is_no_private_key(data: bytes) -> None:
    with pytest.raises(KeyFormatError):
        load_private_key_pem(data)


@pytest.mark.parametrize("data", [ED448_PUBLIC_PEM, OPENSSL_PUBLIC_PEM[:-30], b""])
def test_pem_of_another_shape_is_no_public_key(data: bytes) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key_pem(data)


# -- tokens -------------------------------------------------------------------------------------


def test_an_issued_token_verifies_to_its_claims() -> None:
    claims = verify_token(token_for(), ANCHORS, now=NOW + 10)

    assert claims.sub == "team-a/alice"
    assert claims.roles == ("clinician",)
    assert claims.capabilities == ("diagnose", "triage")
    assert claims.agent_kid == key_id(ALICE_KEY.verify_key)
    assert (claims.iat, claims.exp, claims.iss) == (int(NOW), int(NOW) + 600, "mas")
    assert claims.kid == key_id(ANCHOR.verify_key)


def test_the_token_header_is_an_eddsa_jwt_header() -> None:
    header = json.loads(b64url_decode(token_for().split(".")[0]))

    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": key_id(ANCHOR.verify_key)}


def test_issuing_refuses_bad_agent_ids_and_lifetimes() -> None:
    with pytest.raises(InvalidAgentIdError):
        token_for("alice")
    with pytest.raises(ValueError, match="positive"):
        token_for(ttl=0)


def test_a_token_signed_by_another_anchor_with_the_same_kid_is_forged() -> None:
    other = generate_private_key()
    token = token_for(anchor=other)
    header = json.loads(b64url_decode(token.split(".")[0])) | {"kid": key_id(ANCHOR.verify_key)}

    with pytest.raises(TokenSignatureError):
        verify_token(forge(token, header=header), ANCHORS, now=NOW)


def test_a_token_of_an_untrusted_anchor_names_an_unknown_key() -> None:
    with pytest.raises(UnknownKeyIdError):
        verify_token(token_for(anchor=generate_private_key()), ANCHORS, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [{"sub": "team-a/mallory"}, {"roles": ["admin"]}, {"capabilities": ["*"]},
     {"exp": int(NOW) + 10**6}, {"iss": "someone"},
     {"cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(32))}}}],
)  # fmt: skip
def test_altered_claims_break_the_signature(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenSignatureError):
        verify_token(forge(token_for(), **claims), ANCHORS, now=NOW)


def test_an_altered_signature_is_refused() -> None:
    head, body, signature = token_for().split(".")
    flipped = b64url_encode(bytes([b64url_decode(signature)[0] ^ 1]) + b64url_decode(signature)[1:])

    with pytest.raises(TokenSignatureError):
        verify_token(f"{head}.{body}.{flipped}", ANCHORS, now=NOW)


def test_expiry_and_issue_time_are_enforced_with_leeway() -> None:
    token = token_for(ttl=600)

    verify_token(token, ANCHORS, now=NOW + 600 + 59)
    with pytest.raises(TokenExpiredError):
        verify_token(token, ANCHORS, now=NOW + 600 + 60)
    with pytest.raises(TokenExpiredError):
        verify_token(token, ANCHORS, now=NOW + 601, leeway_s=0)
    verify_token(token, ANCHORS, now=NOW - 59)
    with pytest.raises(TokenNotYetValidError):
        verify_token(token, ANCHORS, now=NOW - 61)
    assert verify_token(token, ANCHORS, now=NOW + 10**6, check_time=False).sub == "team-a/alice"


GOOD_HEADER = {"alg": "EdDSA", "typ": "JWT", "kid": key_id(ANCHOR.verify_key)}
GOOD_CLAIMS = json.loads(b64url_decode(token_for().split(".")[1]))


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "a.b", "a.b.c.d", "a.b.c", "###.###.###", "x" * 9000,
     token_for() + "=", token_for().replace(".", ". ", 1), token_for()[:-1] + "!",
     token_for().rsplit(".", 1)[0] + ".AAAA",
     "e30.e30." + b64url_encode(bytes(64))],
)  # fmt: skip
def test_malformed_token_strings_are_refused(token: str) -> None:
    with pytest.raises(MalformedTokenError):
        verify_token(token, ANCHORS, now=NOW)


@pytest.mark.parametrize(
    "header",
    [{"alg": "none", "kid": GOOD_HEADER["kid"]}, {"alg": "HS256", "kid": GOOD_HEADER["kid"]},
     {"alg": "EdDSA"}, {"alg": "EdDSA", "kid": 7}, GOOD_HEADER | {"typ": "JWE"},
     GOOD_HEADER | {"jku": "https://example.invalid/keys"}, [GOOD_HEADER], "EdDSA"],
)  # fmt: skip
def test_headers_other_than_an_eddsa_jwt_are_refused(header: Any) -> None:
    with pytest.raises(MalformedTokenError):
        verify_token(resign(header, GOOD_CLAIMS), ANCHORS, now=NOW)


@pytest.mark.parametrize(
    "changes",
    [{"sub": "alice"}, {"sub": "Team/Alice"}, {"sub": None}, {"iss": 1}, {"iat": "1"},
     {"iat": True}, {"exp": 1.5}, {"exp": GOOD_CLAIMS["iat"]}, {"roles": "admin"},
     {"roles": [1]}, {"capabilities": [""]}, {"capabilities": None}, {"cnf": None},
     {"cnf": {"jwk": {"kty": "RSA", "crv": "Ed25519", "x": GOOD_CLAIMS["cnf"]["jwk"]["x"]}}},
     {"cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}},
     {"cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519"}}}],
)  # fmt: skip
def test_claims_of_the_wrong_shape_are_refused_even_when_signed(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedTokenError):
        verify_token(resign(GOOD_HEADER, GOOD_CLAIMS | changes), ANCHORS, now=NOW)


def test_claims_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(MalformedTokenError):
        verify_token(resign(GOOD_HEADER, [GOOD_CLAIMS]), ANCHORS, now=NOW)


@given(st.text(max_size=300))
def test_any_string_is_refused_with_a_token_error_and_nothing_else(token: str) -> None:
    with pytest.raises(IdentityError):
        verify_token(token, ANCHORS, now=NOW)


def test_base64url_is_strict() -> None:
    assert b64url_decode(b64url_encode(b"\xff\x00abc")) == b"\xff\x00abc"
    for bad in ["A", "AB==", "AB+/", "AB C", "AF"]:  # "AF": non-zero trailing bits
        with pytest.raises(ValueError):
            b64url_decode(bad)


def test_claims_reprs_hold_no_key_material() -> None:
    token = token_for()
    claims = verify_token(token, ANCHORS, now=NOW)
    public_x = GOOD_CLAIMS["cnf"]["jwk"]["x"]

    for text in (repr(claims), str(claims.to_dict())):
        assert token not in text
        assert public_x not in text
        assert "PRIVATE" not in text


# -- compatibility and algorithm confusion ------------------------------------------------------

# Issued by the hand-written encoder with the fixed keys below at LEGACY_NOW; any new encoder or
# verifier must still accept it (tokens live across a rolling upgrade of sidecars and operator).
LEGACY_ANCHOR = SigningKey(bytes(range(32)))
LEGACY_AGENT = SigningKey(bytes(range(32, 64)))
LEGACY_NOW = 1_800_000_000
LEGACY_TOKEN = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6IjFJRzJ0TUg3SjJ3Ykpabk8iLCJ0eXAiOiJKV1QifQ"
    ".eyJjYXBhYmlsaXRpZXMiOlsiZGlhZ25vc2UiLCJ0cmlhZ2UiXSwiY25mIjp7Imp3ayI6eyJjcnYiOiJFZDI1NTE5Iiwia3"
    "R5IjoiT0tQIiwieCI6IktheTY0VUc4eXZDeUxocVUwMDBMeHpZZVVtMExfaExJbDVTOGt5S1diZGMifX0sImV4cCI6MTgwMD"
    "AwMDYwMCwiaWF0IjoxODAwMDAwMDAwLCJpc3MiOiJtYXMiLCJyb2xlcyI6WyJjbGluaWNpYW4iXSwic3ViIjoidGVhbS1hL2"
    "FsaWNlIn0"
    ".AWq-JdaLMHSXIzYVXvlbP9vEvfp63dDMov5PN_LtoQT-uWTFxRPscVG2mrSsJtWTg0UQJWbDtMs3Xpkgc2OZDQ"
)


def test_a_token_issued_by_an_earlier_release_still_verifies() -> None:
    anchors = {key_id(LEGACY_ANCHOR.verify_key): LEGACY_ANCHOR.verify_key}

    claims = TokenVerifier(anchors).verify(LEGACY_TOKEN, now=LEGACY_NOW + 10)

    assert claims.to_dict() == {
        "sub": "team-a/alice",
        "roles": ["clinician"],
        "capabilities": ["diagnose", "triage"],
        "agent_kid": key_id(LEGACY_AGENT.verify_key),
        "iss": "mas",
        "iat": LEGACY_NOW,
        "exp": LEGACY_NOW + 600,
        "kid": "1IG2tMH7J2wbJZnO",
    }
    assert bytes(claims.agent_key) == raw_public_bytes(LEGACY_AGENT.verify_key)


def _hs256(header: dict[str, Any], secret: bytes) -> str:
    """A token over GOOD_CLAIMS whose signature is an HMAC-SHA256 keyed with ``secret``."""
    signing = f"{b64url_encode(json.dumps(header).encode())}."
    signing += b64url_encode(json.dumps(GOOD_CLAIMS).encode())
    return f"{signing}.{b64url_encode(hmac.digest(secret, signing.encode(), hashlib.sha256))}"


def _unsigned(alg: str) -> str:
    signing = f"{b64url_encode(json.dumps(GOOD_HEADER | {'alg': alg}).encode())}."
    return signing + b64url_encode(json.dumps(GOOD_CLAIMS).encode()) + "."


_ANCHOR_PUBLIC = ANCHOR.verify_key
_PUBLIC_SECRETS = [  # every spelling of the anchor's public key an attacker might HMAC with
    public_key_to_pem(_ANCHOR_PUBLIC),
    raw_public_bytes(_ANCHOR_PUBLIC),
    json.dumps(public_jwk(_ANCHOR_PUBLIC)).encode(),
    public_jwk(_ANCHOR_PUBLIC)["x"].encode(),
]


@pytest.mark.parametrize(
    "token",
    [*(_unsigned(alg) for alg in ("none", "None", "NONE", "")),
     *(_hs256(GOOD_HEADER | {"alg": alg}, secret)
       for alg in ("HS256", "EdDSA") for secret in _PUBLIC_SECRETS),
     *(resign(GOOD_HEADER | {"alg": alg}, GOOD_CLAIMS)
       for alg in ("RS256", "ES256", "PS256", "Ed25519", "Ed448", "eddsa", "EdDSA "))],
)  # fmt: skip
def test_algorithm_confusion_is_refused(token: str) -> None:
    verifier = TokenVerifier(ANCHORS)

    with pytest.raises(MalformedTokenError) as refused:
        verifier.verify(token, now=NOW + 10)
    assert len(verifier) == 0
    assert token not in str(refused.value) + repr(refused.value)
    assert token.split(".")[1] not in str(refused.value)


# -- the verifier's cache -----------------------------------------------------------------------


def test_the_verifier_caches_tokens_until_they_expire() -> None:
    verifier = TokenVerifier(ANCHORS, leeway_s=0)
    token = token_for(ttl=600)

    first = verifier.verify(token, now=NOW)
    assert verifier.verify(token, now=NOW + 599) is first
    assert len(verifier) == 1
    with pytest.raises(TokenExpiredError):
        verifier.verify(token, now=NOW + 600)
    assert len(verifier) == 0


def test_the_verifier_cache_is_bounded_and_never_caches_failures() -> None:
    verifier = TokenVerifier(ANCHORS, max_entries=2)
    tokens = [token_for(f"team-a/agent-{n}") for n in range(3)]
    for token in tokens:
        verifier.verify(token, now=NOW)
    assert len(verifier) == 2
    with pytest.raises(UnknownKeyIdError):
        verifier.verify(token_for(anchor=generate_private_key()), now=NOW)
    assert len(verifier) == 2


# -- envelopes ----------------------------------------------------------------------------------


def test_a_signed_envelope_authenticates_as_its_sender() -> None:
    signed = sign_envelope(envelope(), ALICE_KEY, token_for())

    assert signed.token == token_for()
    assert len(b64url_decode(signed.signature or "")) == 64
    claims = TokenVerifier(ANCHORS).authenticate(signed, now=NOW)
    assert claims.sub == "team-a/alice"


def test_signatures_survive_storage_and_ignore_the_attempt() -> None:
    signed = sign_envelope(envelope(), ALICE_KEY, token_for())
    stored = Envelope.from_entry(signed.to_entry(), attempt=3)

    TokenVerifier(ANCHORS).authenticate(stored, now=NOW)


def test_a_stored_null_rewritten_as_nan_no_longer_reads_as_the_signed_message() -> None:
    signed = sign_envelope(envelope(payload={"x": None}), ALICE_KEY, token_for())
    entry = signed.to_entry()[ENTRY_FIELD]
    assert b'"x":null' in entry

    with pytest.raises(EnvelopeError):
        Envelope.from_entry({ENTRY_FIELD: entry.replace(b'"x":null', b'"x":NaN')})


def test_a_payload_too_deep_to_write_back_fails_verification_instead_of_raising() -> None:
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    signed = sign_envelope(envelope(), ALICE_KEY, token_for())

    with pytest.raises(EnvelopeSignatureError):
        TokenVerifier(ANCHORS).authenticate(signed.model_copy(update={"payload": deep}), now=NOW)


def test_canonical_bytes_do_not_depend_on_key_order() -> None:
    one = envelope(payload={"a": 1, "b": {"y": [1, {"q": 1, "p": 2}], "x": "é"}})
    two = envelope(payload={"b": {"x": "é", "y": [1, {"p": 2, "q": 1}]}, "a": 1})
    reordered = Envelope.model_validate_json(
        json.dumps(dict(reversed(list(json.loads(one.model_dump_json()).items()))))
    )

    assert signing_input(one) == signing_input(two) == signing_input(reordered)
    assert b" " not in signing_input(one).replace(b"team-a", b"")
    assert signing_input(one) == signing_input(one.model_copy(update={"attempt": 4}))
    signed = sign_envelope(one, ALICE_KEY, token_for())
    assert signing_input(one) == signing_input(signed)


@pytest.mark.parametrize(
    "changes",
    [{"payload": {"patient": "p-2"}}, {"type": "triage"}, {"target": "team-b/eve"},
     {"created_at": int(NOW * 1000) + 1}, {"expires_at": 1}, {"correlation_id": "x"},
     {"is_reply": True}, {"reply_to": "r-1"}, {"trace": {}}, {"id": "01J0000000000000000000000B"}],
)  # fmt: skip
def test_any_signed_field_altered_after_signing_breaks_the_signature(
    changes: dict[str, Any],
) -> None:
    signed = sign_envelope(envelope(), ALICE_KEY, token_for())
    altered = signed.model_copy(update=changes)

    with pytest.raises(EnvelopeSignatureError):
        TokenVerifier(ANCHORS).authenticate(altered, now=NOW)


def test_a_changed_sender_does_not_match_the_token() -> None:
    altered = sign_envelope(envelope(), ALICE_KEY, token_for()).model_copy(
        update={"sender": "team-a/mallory"}
    )

    with pytest.raises(SenderMismatchError):
        TokenVerifier(ANCHORS).authenticate(altered, now=NOW)


def test_the_token_of_another_agent_does_not_match_the_sender() -> None:
    signed = sign_envelope(envelope(), BOB_KEY, token_for("team-b/bob", BOB_KEY))

    with pytest.raises(SenderMismatchError):
        TokenVerifier(ANCHORS).authenticate(signed, now=NOW)


def test_a_signature_by_another_key_than_the_tokens_is_refused() -> None:
    signed = sign_envelope(envelope(), BOB_KEY, token_for())

    with pytest.raises(EnvelopeSignatureError):
        TokenVerifier(ANCHORS).authenticate(signed, now=NOW)


@pytest.mark.parametrize("signature", ["", "AAAA", "not base64!", b64url_encode(bytes(64))])
def test_malformed_signatures_are_refused(signature: str) -> None:
    signed = sign_envelope(envelope(), ALICE_KEY, token_for())

    with pytest.raises(EnvelopeSignatureError):
        verify_envelope(
            signed.model_copy(update={"signature": signature}),
            verify_token(token_for(), ANCHORS, now=NOW),
        )


def test_unsigned_envelopes_and_expired_tokens_are_refused() -> None:
    verifier = TokenVerifier(ANCHORS)
    with pytest.raises(UnsignedEnvelopeError):
        verifier.authenticate(envelope(), now=NOW)
    with pytest.raises(UnsignedEnvelopeError):
        verifier.authenticate(envelope(token=token_for()), now=NOW)
    signed = sign_envelope(envelope(), ALICE_KEY, token_for(ttl=60))
    with pytest.raises(TokenExpiredError):
        verifier.authenticate(signed, now=NOW + 3600)


def test_failures_carry_stable_reasons() -> None:
    assert TokenExpiredError.reason == "token_expired"
    assert SenderMismatchError.reason == "sender_mismatch"
    assert issubclass(EnvelopeSignatureError, IdentityError)

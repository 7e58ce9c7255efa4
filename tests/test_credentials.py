"""Credentials on disk, the sidecar's hot-reloading store, and ``mas identity`` as a subprocess."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import eventually

from mas_core.envelope import Envelope
from mas_core.identity.credentials import (
    AGENT_KEY_FILE,
    ANCHOR_KEY_FILE,
    TOKEN_FILE,
    TRUST_DIR,
    Anchor,
    CredentialsError,
    add_trust,
    create_anchor,
    issue_agent_credentials,
    load_agent_credentials,
    load_anchor,
    write_atomic,
)
from mas_core.identity.tokens import TokenVerifier, key_id, private_key_to_pem, sign_envelope
from mas_sidecar.checks.credentials import CredentialStore

MAS = [sys.executable, "-c", "import sys; from mas_cli.main import main; sys.exit(main())"]
AGENT = "team-a/alice"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def issue(anchor: Anchor, directory: Path, ttl_seconds: int = 3600) -> None:
    issue_agent_credentials(
        anchor, directory, agent_id=AGENT, roles=["r"], capabilities=["c"], ttl_seconds=ttl_seconds
    )


@pytest.fixture
def anchor(tmp_path: Path) -> Anchor:
    return create_anchor(tmp_path / "anchor")


# -- the layout ---------------------------------------------------------------------------------


def test_an_anchor_and_an_agents_credentials_are_written_with_private_files_0600(
    tmp_path: Path, anchor: Anchor
) -> None:
    agent_dir = tmp_path / "alice"
    credentials = issue_agent_credentials(
        anchor, agent_dir, agent_id=AGENT, roles=["r"], capabilities=["c"], ttl_seconds=60
    )

    assert mode(tmp_path / "anchor" / ANCHOR_KEY_FILE) == 0o600
    assert mode(agent_dir / AGENT_KEY_FILE) == 0o600
    assert mode(agent_dir / TOKEN_FILE) == 0o600
    assert mode(agent_dir / "agent.pub") & 0o077 in (0o044, 0o000)
    assert sorted(p.name for p in (agent_dir / TRUST_DIR).iterdir()) == [f"{anchor.kid}.pub"]
    assert not [p for p in agent_dir.rglob(".*")]  # no temporary files left behind
    assert load_anchor(tmp_path / "anchor").kid == anchor.kid
    loaded = load_agent_credentials(agent_dir, agent_id=AGENT)
    assert loaded.claims == credentials.claims
    assert loaded.claims.exp - loaded.claims.iat == 60
    assert loaded.trusted_kids == (anchor.kid,)


def test_an_existing_anchor_is_never_replaced(tmp_path: Path, anchor: Anchor) -> None:
    with pytest.raises(CredentialsError, match="already holds"):
        create_anchor(tmp_path / "anchor")
    assert load_anchor(tmp_path / "anchor").kid == anchor.kid


def test_renewal_keeps_the_agent_key_unless_rotated(tmp_path: Path, anchor: Anchor) -> None:
    first = issue_agent_credentials(anchor, tmp_path / "a", agent_id=AGENT, ttl_seconds=60)
    renewed = issue_agent_credentials(anchor, tmp_path / "a", agent_id=AGENT, ttl_seconds=120)
    rotated = issue_agent_credentials(anchor, tmp_path / "a", agent_id=AGENT, rotate_key=True)

    assert renewed.claims.agent_kid == first.claims.agent_kid
    assert renewed.token != first.token
    assert rotated.claims.agent_kid != first.claims.agent_kid


def test_several_anchors_can_be_trusted_during_a_rotation(tmp_path: Path, anchor: Anchor) -> None:
    new_anchor = create_anchor(tmp_path / "new-anchor")
    issue_agent_credentials(anchor, tmp_path / "old-agent", agent_id="team-b/bob")
    issue_agent_credentials(new_anchor, tmp_path / "alice", agent_id=AGENT)
    add_trust(tmp_path / "alice", anchor.public_key)

    alice = load_agent_credentials(tmp_path / "alice", agent_id=AGENT)
    bob = load_agent_credentials(tmp_path / "old-agent")

    assert set(alice.trusted_kids) == {anchor.kid, new_anchor.kid}
    assert TokenVerifier(alice.trust).verify(bob.token).sub == "team-b/bob"


@pytest.mark.parametrize(
    "damage",
    ["missing token", "garbage token", "garbage key", "other key", "no trust", "misnamed trust",
     "wrong agent"],
)  # fmt: skip
def test_inconsistent_credentials_are_refused(tmp_path: Path, anchor: Anchor, damage: str) -> None:
    directory = tmp_path / "alice"
    issue(anchor, directory)
    trust_file = directory / TRUST_DIR / f"{anchor.kid}.pub"
    if damage == "missing token":
        (directory / TOKEN_FILE).unlink()
    elif damage == "garbage token":
        (directory / TOKEN_FILE).write_text("not.a.token")
    elif damage == "garbage key":
        (directory / AGENT_KEY_FILE).write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    elif damage == "other key":
        other = create_anchor(tmp_path / "other").private_key
        write_atomic(directory / AGENT_KEY_FILE, private_key_to_pem(other), 0o600)
    elif damage == "no trust":
        trust_file.unlink()
    elif damage == "misnamed trust":
        trust_file.rename(trust_file.with_name("AAAAAAAAAAAAAAAA.pub"))
    with pytest.raises(CredentialsError):
        load_agent_credentials(
            directory, agent_id="team-a/mallory" if damage == "wrong agent" else AGENT
        )


def test_reprs_and_errors_hold_no_private_key_material(tmp_path: Path, anchor: Anchor) -> None:
    directory = tmp_path / "alice"
    issue(anchor, directory)
    credentials = load_agent_credentials(directory)
    key_pem = (directory / AGENT_KEY_FILE).read_text()
    key_body = "".join(key_pem.splitlines()[1:-1])
    (directory / AGENT_KEY_FILE).write_text(key_pem[:-40])
    with pytest.raises(CredentialsError) as failure:
        load_agent_credentials(directory)

    for text in (repr(credentials), repr(anchor), str(failure.value), repr(failure.value)):
        assert key_body not in text
        assert credentials.token not in text
        assert "PRIVATE" not in text


# -- the sidecar's store ------------------------------------------------------------------------


def test_the_store_picks_up_a_renewed_token_without_restart(tmp_path: Path, anchor: Anchor) -> None:
    directory = tmp_path / "alice"
    issue(anchor, directory, ttl_seconds=60)
    store = CredentialStore(directory, agent_id=AGENT)
    store.load()
    old_token, verifier = store.token, store.verifier

    assert not store.reload_if_changed()
    time.sleep(0.01)
    issue(anchor, directory, ttl_seconds=3600)
    assert store.reload_if_changed()

    assert store.token != old_token
    assert store.claims.exp - store.claims.iat == 3600
    assert store.verifier is verifier  # same anchors: the verifier and its cache stay
    signed = sign_envelope(
        Envelope(id="m1", sender=AGENT, target="team-b/bob", type="t", created_at=1),
        store.signing_key,
        store.token,
    )
    assert store.verifier.authenticate(signed).sub == AGENT


async def test_the_reload_loop_follows_rotations_and_keeps_the_last_good_set(
    tmp_path: Path, anchor: Anchor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    directory = tmp_path / "alice"
    issue(anchor, directory)
    store = CredentialStore(directory, agent_id=AGENT)
    store.load()
    good, good_kid = store.token, store.claims.agent_kid
    stop = asyncio.Event()
    loop = asyncio.create_task(store.reload_until(stop))
    try:
        # key rotated, token not yet renewed: an inconsistent set is not taken
        other_key = create_anchor(tmp_path / "k").private_key
        write_atomic(directory / AGENT_KEY_FILE, private_key_to_pem(other_key), 0o600)
        await eventually(lambda: store.error is not None and "another key" in store.error)
        assert store.token == good

        (directory / TOKEN_FILE).write_text("half-writ")
        await eventually(lambda: store.error is not None and "dot-separated" in store.error)
        assert store.token == good

        new_anchor = create_anchor(tmp_path / "new-anchor")
        issue_agent_credentials(new_anchor, directory, agent_id=AGENT, rotate_key=True)
        await eventually(lambda: store.token != good)
        assert store.error is None
        assert new_anchor.kid in store.verifier.anchors
        agent_key = store.credentials.agent_key
        assert store.claims.agent_kid == key_id(agent_key.verify_key) != good_kid
    finally:
        stop.set()
        await loop

    key_pem = (directory / AGENT_KEY_FILE).read_text()
    key_body = "".join(key_pem.splitlines()[1:-1])
    assert key_body not in caplog.text
    assert store.token not in caplog.text
    assert "credentials reloaded" in caplog.text
    assert caplog.text.count("keeping the last good set") == 2


def test_the_store_says_when_its_token_cannot_sign_expired_or_not_yet_valid(
    tmp_path: Path, anchor: Anchor
) -> None:
    directory = tmp_path / "alice"
    issue_agent_credentials(anchor, directory, agent_id=AGENT, ttl_seconds=60, now=1_000_000)
    store = CredentialStore(directory, agent_id=AGENT)
    store.load()  # an expired set still loads: the sidecar starts, receives, and says why

    usable = [store.unusable(now=at) for at in (1_000_000 - 60, 1_000_000, 1_000_059)]
    expired = store.unusable(now=1_000_060)
    early = store.unusable(now=1_000_000 - 61)  # beyond the leeway receivers allow
    (directory / TOKEN_FILE).write_text("half-writ")
    assert not store.reload_if_changed()

    assert usable == [None, None, None]
    assert expired == "the identity token of team-a/alice expired at 1000060"
    assert early == "the identity token of team-a/alice is valid only from 1000000"
    assert "renewed credentials could not be loaded" in str(store.unusable(now=1_000_060))


def test_a_store_without_valid_credentials_does_not_start(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "nothing", agent_id=AGENT)
    with pytest.raises(CredentialsError):
        store.load()
    with pytest.raises(CredentialsError):
        store.token  # noqa: B018


def test_a_store_refuses_credentials_of_another_agent(tmp_path: Path, anchor: Anchor) -> None:
    issue(anchor, tmp_path / "alice")
    with pytest.raises(CredentialsError, match="not team-b/bob"):
        CredentialStore(tmp_path / "alice", agent_id="team-b/bob").load()


# -- mas identity -------------------------------------------------------------------------------


def mas(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAS, "identity", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_mas_identity_creates_an_anchor_issues_and_shows_credentials(tmp_path: Path) -> None:
    init = mas("init-anchor", tmp_path / "anchor")
    assert init.returncode == 0, init.stderr
    assert mas("init-anchor", tmp_path / "anchor").returncode == 1

    issued = mas(
        "issue", "--anchor", tmp_path / "anchor", "--agent-id", "team-a/alice",
        "--role", "clinician", "--role", "lead", "--capability", "diagnose", "--ttl", "120",
        tmp_path / "alice",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    assert "team-a/alice" in issued.stdout
    assert mode(tmp_path / "alice" / AGENT_KEY_FILE) == 0o600

    shown = mas("show", tmp_path / "alice")
    assert shown.returncode == 0, shown.stderr
    claims = json.loads(shown.stdout)
    assert claims["sub"] == "team-a/alice"
    assert claims["roles"] == ["clinician", "lead"]
    assert claims["capabilities"] == ["diagnose"]
    assert claims["exp"] - claims["iat"] == 120
    assert claims["expired"] is False
    assert claims["trusted_anchors"] == [load_anchor(tmp_path / "anchor").kid]

    secrets = [
        (tmp_path / "anchor" / ANCHOR_KEY_FILE).read_text(),
        (tmp_path / "alice" / AGENT_KEY_FILE).read_text(),
    ]
    for run in (init, issued, shown):
        for secret in secrets:
            assert "".join(secret.splitlines()[1:-1]) not in run.stdout + run.stderr
        assert "PRIVATE" not in run.stdout + run.stderr


def test_mas_identity_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    no_anchor = mas("issue", "--anchor", tmp_path / "none", "--agent-id", "a/b", tmp_path / "x")
    bad_id = mas("issue", "--anchor", tmp_path / "none", "--agent-id", "A/B", tmp_path / "x")
    bad_ttl = mas("issue", "--anchor", tmp_path, "--agent-id", "a/b", "--ttl", "0", tmp_path / "x")
    nothing = mas("show", tmp_path)

    assert no_anchor.returncode == 1
    assert no_anchor.stderr.startswith("mas: error: cannot read anchor.key")
    assert bad_id.returncode == 2
    assert bad_ttl.returncode == 2
    assert nothing.returncode == 1
    assert len(nothing.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x")

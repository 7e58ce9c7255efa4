"""Pure parts of the gateway checks: rules, token buckets, circuit breakers, policy merging."""

from __future__ import annotations

import time

import pytest

from mas_core.policy.dlp import DlpAction, DlpPolicy
from mas_core.policy.document import (
    CircuitBreaker,
    GatewayPolicySpec,
    compile_policies,
    effective_policy,
    merge_dlp,
)
from mas_core.policy.rules import Party, Rule, ScopedRule, authorize, may_message
from mas_sidecar.checks.breaker import Breakers, State
from mas_sidecar.checks.ratelimit import Bucket


def rule(**fields: object) -> ScopedRule:
    return ScopedRule("ns/p", Rule.model_validate(fields))


ALICE, BOB = Party("ns/alice", frozenset({"staff"})), Party("ns/bob", frozenset({"search"}))


@pytest.mark.parametrize(
    ("rules", "allowed"),
    [
        ([], False),
        ([rule(name="any", action="allow")], True),
        ([rule(name="a", action="allow"), rule(name="d", action="deny", types=["x"])], False),
        ([rule(name="role", action="allow", **{"from": {"roles": ["staff"]}})], True),
        ([rule(name="role", action="allow", **{"from": {"roles": ["admin"]}})], False),
        ([rule(name="cap", action="allow", to={"capabilities": ["search"]})], True),
        ([rule(name="glob", action="allow", to={"agents": ["ns/b*"]}, types=["x*"])], True),
        ([rule(name="type", action="allow", types=["y", "z.*"])], False),
    ],
)
def test_deny_wins_and_nothing_matching_means_deny(rules: list[ScopedRule], allowed: bool) -> None:
    assert authorize(rules, ALICE, BOB, "x").allowed is allowed


def test_a_decision_names_its_rule() -> None:
    decision = authorize([rule(name="no-x", action="deny", types=["x"])], ALICE, BOB, "x")
    assert (decision.allowed, decision.rule) == (False, "ns/p/no-x")


def test_may_message_is_any_allow_not_cancelled_by_a_blanket_deny() -> None:
    allow = rule(name="a", action="allow", types=["only-this"])
    assert may_message([allow], ALICE, BOB)
    assert not may_message([allow, rule(name="d", action="deny")], ALICE, BOB)
    assert not may_message([], ALICE, BOB)


def test_names_in_a_policy_are_relative_to_its_namespace() -> None:
    spec = GatewayPolicySpec.model_validate(
        {"agents": ["alice"], "rules": [{"name": "r", "action": "allow", "to": {"agents": ["*"]}}]}
    )
    document = compile_policies([("team", "p", spec)])

    assert effective_policy(document, "team/alice").rules[0].rule.targets.agents == ["team/*"]
    assert effective_policy(document, "other/alice").rules == ()


def test_the_revision_changes_with_the_content_only() -> None:
    spec = GatewayPolicySpec.model_validate({"rules": [{"name": "r", "action": "allow"}]})
    same = compile_policies([("ns", "p", spec)]).revision

    assert compile_policies([("ns", "p", spec)]).revision == same
    assert compile_policies([("ns", "q", spec)]).revision != same


def test_merged_dlp_keeps_each_detectors_strictest_action() -> None:
    merged = merge_dlp(
        [
            DlpPolicy(detectors={"email": DlpAction.LOG, "iban": DlpAction.BLOCK}),
            DlpPolicy(detectors={"email": DlpAction.REDACT}),
            DlpPolicy(enabled=False, detectors={"email": DlpAction.BLOCK}),
        ]
    )
    assert merged.detectors == {"email": DlpAction.REDACT, "iban": DlpAction.BLOCK}


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = Bucket(rate=2, burst=3)

    assert [bucket.take(100.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.5) == 0


def test_a_circuit_opens_on_consecutive_failures_then_probes_once() -> None:
    settings = CircuitBreaker(failure_threshold=2, open_seconds=0.05)
    breakers = Breakers()
    breakers.record("ns/bob", settings, ok=False)
    assert breakers.check("ns/bob", settings, live=True) is None
    breakers.record("ns/bob", settings, ok=False)

    refused = breakers.check("ns/bob", settings, live=True)
    assert refused is not None and "2 consecutive write failures" in refused[1]
    time.sleep(0.06)
    assert breakers.check("ns/bob", settings, live=True) is None  # the probe
    assert breakers.check("ns/bob", settings, live=True) is not None  # one probe at a time
    breakers.record("ns/bob", settings, ok=True)
    assert breakers.check("ns/bob", settings, live=True) is None
    assert breakers.counts()[State.CLOSED] == 1


def test_a_circuit_opens_while_its_target_is_not_live_when_the_policy_asks() -> None:
    breakers = Breakers()

    assert breakers.check("ns/bob", CircuitBreaker(), live=False) is None
    refused = breakers.check("ns/bob", CircuitBreaker(when_not_live=True), live=False)
    assert refused is not None and "not live" in refused[1]


def test_a_probe_that_never_reports_back_is_replaced_by_another() -> None:
    settings = CircuitBreaker(failure_threshold=1, open_seconds=0.05)
    breakers = Breakers()
    breakers.record("ns/bob", settings, ok=False)
    time.sleep(0.06)
    assert breakers.check("ns/bob", settings, live=True) is None  # a probe, then silence

    time.sleep(0.06)

    assert breakers.check("ns/bob", settings, live=True) is None

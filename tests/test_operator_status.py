"""The operator's status builders, as specifications: what each outcome of a reconcile or a
status refresh writes into ``status``, on the wire as Kubernetes shows it.

Pure: the builders take the conditions already there and what a handler learned, and return the
typed models; :func:`status_patch` is what kopf then patches.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mas_control.audit_keeper import Kept
from mas_operator.crds import AgentStatus, Condition, InboxStatus
from mas_operator.policies import PolicyVerdict
from mas_operator.status import (
    AgentObserved,
    agent_not_ready,
    agent_provisioned,
    agent_ready,
    agent_reconciled,
    agent_refreshed,
    audit_status,
    audit_unarchived,
    condition,
    moment,
    policy_reconciled,
    policy_refreshed,
    read_conditions,
    selector_text,
    set_condition,
    status_patch,
)

T1 = datetime(2030, 5, 1, 10, 0, 0, tzinfo=UTC)
SELECTOR = "app.kubernetes.io/name=mas-agent,mas.dev/agent=w"
T2 = datetime(2030, 5, 1, 10, 5, 0, tzinfo=UTC)
T3 = datetime(2030, 5, 1, 10, 9, 0, tzinfo=UTC)


def wire(model: Any) -> dict[str, Any]:
    """What a status model patches onto an empty status."""
    return status_patch({}, model)


def ready(ok: bool, now: datetime, reason: str = "Available") -> Condition:
    return condition("Ready", ok, reason, "m", generation=3, now=now)


# -- conditions ---------------------------------------------------------------------------------


def test_condition_follows_api_conventions() -> None:
    assert wire(AgentStatus(conditions=[ready(True, T1)])) == {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Available",
                "message": "m",
                "lastTransitionTime": "2030-05-01T10:00:00Z",
                "observedGeneration": 3,
            }
        ]
    }
    assert ready(False, T1).status == "False"


def test_set_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    other = Condition(type="CredentialsIssued", status="True", last_transition_time=T1)
    first = set_condition([other], ready(False, T1, "RolloutInProgress"))
    assert first == [other, ready(False, T1, "RolloutInProgress")]
    same = set_condition(first, ready(False, T2, "ReplicasUnavailable"))
    assert same[1].last_transition_time == T1
    assert same[1].reason == "ReplicasUnavailable"
    flipped = set_condition(same, ready(True, T3))
    assert flipped[1].last_transition_time == T3
    assert flipped[0] == other
    assert first[1].last_transition_time == T1  # inputs are not modified


def test_conditions_are_read_back_and_garbage_is_dropped() -> None:
    written = wire(AgentStatus(conditions=[ready(True, T1)]))
    garbage = {"type": "Ready", "status": "Perhaps"}
    read = read_conditions({"conditions": [*written["conditions"], garbage]})
    assert read == [ready(True, T1)]
    assert read_conditions({}) == []


# -- the patch ----------------------------------------------------------------------------------


def test_only_the_fields_that_differ_are_patched_and_a_cleared_error_is_null() -> None:
    current = {"revision": "r1", "selectedAgents": 2, "enforcedBy": 1}
    fresh = policy_refreshed(revision="r1", selected_agents=2, enforced_by=3)
    assert status_patch(current, fresh) == {"enforcedBy": 3}
    assert status_patch({**current, "enforcedBy": 3}, fresh) == {}
    valid = policy_reconciled([], None, revision="r2", generation=4, now=T1)
    assert status_patch({"error": "bad rule"}, valid)["error"] is None


def test_times_are_rfc3339_in_whole_seconds() -> None:
    fresh = agent_reconciled(
        [], token_expires_at=moment(1_900_000_000.7), selector=SELECTOR, generation=1, now=T1
    )
    assert wire(fresh)["tokenExpiresAt"] == "2030-03-17T17:46:40Z"


# -- Agent --------------------------------------------------------------------------------------


def test_a_reconciled_agent_is_rolling_out_until_the_refresh_sees_its_deployment() -> None:
    provisioned = agent_provisioned(
        [], acl_user="mas-agent.team.worker", token_expires_at=T3, generation=2, now=T1
    )
    fresh = wire(
        agent_reconciled(provisioned, token_expires_at=T3, selector=SELECTOR, generation=2, now=T1)
    )
    assert fresh["observedGeneration"] == 2
    assert fresh["selector"] == SELECTOR  # the scale subresource's, from the first reconcile
    assert fresh["tokenExpiresAt"] == "2030-05-01T10:09:00Z"
    by_type = {c["type"]: c for c in fresh["conditions"]}
    assert by_type["RedisACLReady"]["message"] == (
        "ACL user mas-agent.team.worker reaches only the agent's own keys"
    )
    assert by_type["CredentialsIssued"]["message"] == (
        "identity token valid until 2030-05-01T10:09:00Z"
    )
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "RollingOut")

    current = [condition("Ready", True, "Available", "1 of 1", generation=2, now=T1)]
    kept = agent_reconciled(current, token_expires_at=T3, selector=SELECTOR, generation=2, now=T2)
    assert kept.conditions == current
    stale = agent_reconciled(current, token_expires_at=T3, selector=SELECTOR, generation=3, now=T2)
    assert stale.conditions[0].reason == "RollingOut"


def test_a_refused_agent_reports_why_and_nothing_else() -> None:
    refused = wire(agent_not_ready([], "Forbidden", "refused: hostPath", generation=5, now=T1))
    assert list(refused) == ["conditions"]
    assert refused["conditions"][0]["reason"] == "Forbidden"
    assert refused["conditions"][0]["observedGeneration"] == 5


def observed(**fields: Any) -> AgentObserved:
    base: dict[str, Any] = {
        "replicas": 2,
        "ready_replicas": 2,
        "ready": True,
        "ready_message": "2 of 2 replicas available",
        "token_expires_at": None,
        "policy_revision": "r7",
        "enforcing": 2,
        "selector": SELECTOR,
        "current_replicas": 2,
    }
    return AgentObserved(**{**base, **fields})


def test_a_refresh_reports_readiness_replicas_and_the_policy_in_force() -> None:
    fresh = wire(agent_refreshed([], observed(), generation=1, now=T1))
    by_type = {c["type"]: c for c in fresh["conditions"]}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("True", "Available")
    assert by_type["PolicyApplied"]["reason"] == "Enforced"
    assert by_type["PolicyApplied"]["message"] == "2 of 2 sidecars enforce revision r7"
    assert (fresh["replicas"], fresh["readyReplicas"], fresh["policyRevision"]) == (2, 2, "r7")
    assert "tokenExpiresAt" not in fresh

    renewed = wire(agent_refreshed([], observed(token_expires_at=T3), generation=1, now=T1))
    assert renewed["tokenExpiresAt"] == "2030-05-01T10:09:00Z"


def test_the_scale_subresource_reads_the_deployments_pods_and_the_selector() -> None:
    # Scaled from 2 to 3: the Deployment made a third pod, not ready yet.
    seen = observed(replicas=3, current_replicas=3, ready_replicas=2, ready=False)
    fresh = wire(agent_refreshed([], seen, generation=2, now=T1))
    assert (fresh["replicas"], fresh["readyReplicas"], fresh["readiness"]) == (3, 2, "2/3")
    assert fresh["selector"] == SELECTOR
    assert "inbox" not in fresh  # not measured: the last measure stays

    stopped = observed(replicas=0, current_replicas=0, ready_replicas=0, enforcing=0)
    zero = wire(agent_refreshed([], stopped, generation=3, now=T1))
    assert (zero["replicas"], zero["readiness"]) == (0, "0/0")
    assert next(c for c in zero["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_a_refresh_reports_the_inbox_backlog() -> None:
    inbox = InboxStatus(messages=7, pending=2, oldest_age_seconds=41)
    fresh = wire(agent_refreshed([], observed(inbox=inbox), generation=1, now=T1))
    assert fresh["inbox"] == {"messages": 7, "pending": 2, "oldestAgeSeconds": 41}


def test_selectors_are_written_as_kubernetes_parses_them() -> None:
    assert selector_text({"mas.dev/agent": "w", "app.kubernetes.io/name": "mas-agent"}) == SELECTOR


@pytest.mark.parametrize(
    ("fields", "reason", "words"),
    [
        ({"enforcing": 1}, "Pending", "1 of 2 sidecars enforce revision r7"),
        ({"policy_revision": None}, "Pending", "no gateway policy has been published"),
        ({"redis_error": "Redis is down"}, "RedisUnavailable", "Redis is down"),
    ],
)
def test_a_policy_not_yet_in_force_keeps_the_last_revision_reported(
    fields: dict[str, Any], reason: str, words: str
) -> None:
    fresh = wire(agent_refreshed([], observed(**fields), generation=1, now=T1))
    applied = next(c for c in fresh["conditions"] if c["type"] == "PolicyApplied")
    assert (applied["status"], applied["reason"], applied["message"]) == ("False", reason, words)
    assert "policyRevision" not in fresh


def test_the_audit_status_says_whether_the_trail_is_intact() -> None:
    empty = audit_status(Kept(checkpoint=None), retention=None, archiving=False)
    assert wire(AgentStatus(audit=empty)) == {
        "audit": {"intact": True, "message": "no audit entries yet"}
    }
    tampered = audit_status(
        Kept(checkpoint=None, problem="entry 3 rewritten"), retention=None, archiving=True
    )
    assert not tampered.intact
    assert tampered.message is not None and "NOT intact: entry 3 rewritten" in tampered.message
    unarchived = audit_unarchived({"audit": {"intact": False, "checkpoint": 4}}, "disk full")
    assert wire(AgentStatus(audit=unarchived)) == {
        "audit": {
            "intact": False,
            "checkpoint": 4,
            "message": "cannot write the archive (disk full), so nothing is trimmed",
        }
    }


# -- readiness ----------------------------------------------------------------------------------


def deployment_status(**fields: Any) -> dict[str, Any]:
    return {
        "observedGeneration": 4,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        **fields,
    }


def test_ready_when_every_replica_is_updated_and_available() -> None:
    ok, why = agent_ready(
        deployment_status=deployment_status(), deployment_generation=4, replicas=2
    )
    assert ok
    assert "2 of 2" in why


@pytest.mark.parametrize(
    ("fields", "generation", "words"),
    [
        ({"observedGeneration": 3}, 4, "generation 4"),
        ({}, 5, "generation 5"),
        ({"updatedReplicas": 1, "replicas": 3}, 4, "1 of 2 replicas updated"),
        ({"replicas": 3}, 4, "old replicas"),
        ({"availableReplicas": 1}, 4, "1 of 2 replicas available"),
        ({"availableReplicas": None}, 4, "0 of 2 replicas available"),
        (
            {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]},
            4,
            "stuck",
        ),
    ],
)
def test_not_ready(fields: dict[str, Any], generation: int, words: str) -> None:
    ok, why = agent_ready(
        deployment_status=deployment_status(**fields),
        deployment_generation=generation,
        replicas=2,
    )
    assert not ok
    assert words in why


def test_not_ready_before_the_first_status() -> None:
    ok, _ = agent_ready(deployment_status={}, deployment_generation=1, replicas=1)
    assert not ok


def test_not_ready_when_the_agent_was_just_scaled() -> None:
    ok, why = agent_ready(
        deployment_status=deployment_status(), deployment_generation=4, replicas=3
    )
    assert not ok
    assert "2 of 3" in why


# -- GatewayPolicy ------------------------------------------------------------------------------


def test_an_invalid_policy_says_why_and_whether_its_last_good_version_stays() -> None:
    verdict = PolicyVerdict(namespace="team", name="p", error="bad rule", in_force=True)
    fresh = wire(policy_reconciled([], verdict, revision="r3", generation=2, now=T1))
    valid = fresh["conditions"][0]
    assert (valid["type"], valid["status"], valid["reason"]) == ("Valid", "False", "Invalid")
    assert valid["message"] == "bad rule; its last good version stays in force"
    assert (fresh["error"], fresh["revision"], fresh["observedGeneration"]) == ("bad rule", "r3", 2)
    never = PolicyVerdict(namespace="team", name="p", error="bad rule", in_force=False)
    message = policy_reconciled([], never, revision="r3", generation=2, now=T1).conditions[0]
    assert message.message == "bad rule; it was never valid, so it is not in force"

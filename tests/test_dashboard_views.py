"""The dashboard's pure builders: from what was read to what the pages show.

Audit entries are made with the real chain code; no Redis. The rates are over the last
minute before the snapshot's time, given, not read from a clock.
"""

from __future__ import annotations

from typing import Any

from mas_core.audit.chain import Chain, Entry
from mas_core.dead_letters import DeadLetter
from mas_core.policy.document import GatewayPolicySpec, compile_policies
from mas_core.policy.rules import Rule
from mas_core.registry_entries import entry_document
from mas_dashboard.reading import AgentData, ChainVerdict, InboxStream, Snapshot
from mas_dashboard.views import (
    RATE_WINDOW_MS,
    agent_row,
    dead_letter_rows,
    decision_of,
    decisions,
    graph,
    page,
    policy_rows,
)

NOW = 1_700_000_000_000
POLICY = compile_policies(
    [
        (
            "default",
            "p",
            GatewayPolicySpec(agents=["default/*"], rules=[Rule(name="r", action="allow")]),
        )
    ]
)


def entries(*events: dict[str, Any]) -> list[Entry]:
    chain = Chain("r1")
    return [(f"{i + 1}-0".encode(), chain.append(event)) for i, event in enumerate(events)]


def sent(decision: str, to: str, at: int = NOW - 1000, **details: Any) -> dict[str, Any]:
    return {
        "at": at,
        "decision": decision,
        "to": to,
        "message_id": "m1",
        "from": "default/patient",
        "type": "consultation.question",
        "payload_sha256": "0" * 64,
        **details,
    }


def agent(agent_id: str, audit: list[Entry], **fields: Any) -> AgentData:
    values: dict[str, Any] = {
        "registered": entry_document(["c"], ["r"]),
        "lease_deadline_ms": NOW + 10_000,
        "inbox": [],
        "dead_letters": [],
        "chain": ChainVerdict(True, len(audit)),
        **fields,
    }
    return AgentData(agent_id=agent_id, recent_audit=audit, **values)


def snapshot(*agents: AgentData, **fields: Any) -> Snapshot:
    values: dict[str, Any] = {
        "policy_document": POLICY.to_json(),
        "policy_revision": POLICY.revision,
        "enforcers": {"default/patient/r1": POLICY.revision},
        **fields,
    }
    return Snapshot(now_ms=NOW, agents=list(agents), **values)


PATIENT = agent(
    "default/patient",
    entries(
        sent("accepted", "default/doctor", rule="default/p/r"),
        sent("accepted", "default/doctor", dlp=[{"detector": "us_ssn", "action": "redact"}]),
        sent("dlp_blocked", "default/doctor", reason="blocked: payment_card",
             dlp=[{"detector": "payment_card", "action": "block"}]),
        sent("denied", "default/doctor", reason="denied by rule default/p/no-admin"),
        sent("accepted", "default/doctor", at=NOW - RATE_WINDOW_MS - 1),
        {"at": NOW, "decision": "metadata_published", "agent": "default/patient"},
    ),
)  # fmt: skip


def test_each_decision_gets_its_kind_rule_and_detectors_and_never_a_payload() -> None:
    found = [decision_of("default/patient", e) for e in PATIENT.recent_audit]

    kinds = [(d.kind, d.rule, d.detectors) for d in found if d is not None]
    assert kinds == [
        ("accepted", "default/p/r", ()),
        ("redacted", None, ("us_ssn",)),
        ("dlp_blocked", None, ("payment_card",)),
        ("denied", None, ()),
        ("accepted", None, ()),
    ]
    assert found[-1] is None  # not a message decision
    assert not any(hasattr(d, "payload") for d in found if d is not None)


def test_a_receipt_counts_its_batch_and_an_unauthenticated_refusal_says_so() -> None:
    receipt = {"at": NOW, "decision": "received", "to": "default/doctor", "messages": [
        {"message_id": "a", "from": "default/patient", "type": "t"},
        {"message_id": "b", "from": "default/patient", "type": "t"},
    ]}  # fmt: skip
    refused = sent("refused_on_receive", "default/doctor", reason="unauthenticated: bad sig")
    [batch, forged] = [decision_of("default/doctor", e) for e in entries(receipt, refused)]

    assert batch is not None and (batch.kind, batch.count, batch.sender) == (
        "received",
        2,
        "default/patient",
    )
    assert forged is not None and forged.kind == "unauthenticated"


def test_the_feed_is_newest_first_across_trails() -> None:
    doctor = agent("default/doctor", entries(sent("accepted", "default/patient", at=NOW)))

    feed = decisions(snapshot(PATIENT, doctor), limit=2)

    assert [d.trail for d in feed] == ["default/doctor", "default/patient"]


def test_an_agent_row_rates_its_last_minute_and_reads_its_inbox() -> None:
    inbox = [InboxStream("default/doctor", 3, 1, NOW - 2500), InboxStream("default/x", 2, 0, None)]
    dead = [DeadLetter("1-0", None, "default/doctor", "bad", 1, NOW)]
    patient = agent("default/patient", PATIENT.recent_audit, inbox=inbox, dead_letters=dead)

    row = agent_row(snapshot(patient), patient)

    window = RATE_WINDOW_MS / 1000
    assert (row.out_per_s, row.refusals_per_s, row.in_per_s) == (2 / window, 2 / window, 0)
    assert (row.backlog, row.oldest_pending_s, row.dead_letters) == (5, 2.5, 1)
    assert (row.replicas_live, row.policy_revisions) == (1, (POLICY.revision,))
    assert (row.capabilities, row.roles) == (("c",), ("r",))


def test_an_agent_whose_lease_ran_out_has_no_live_replica() -> None:
    gone = agent("default/patient", [], lease_deadline_ms=NOW - 1)

    assert agent_row(snapshot(gone), gone).replicas_live == 0


def test_a_broken_chain_shows_where() -> None:
    broken = agent("default/patient", [], chain=ChainVerdict(False, 9, "entry 5: altered", 5))

    row = agent_row(snapshot(broken), broken)

    assert (row.audit_intact, row.audit_broken_at) == (False, 5)


def test_the_graph_has_an_edge_per_sender_and_target_with_refusals_marked() -> None:
    drawn = graph(snapshot(PATIENT))

    assert drawn["nodes"] == ["default/doctor", "default/patient"]
    [edge] = drawn["edges"]
    assert (edge["from"], edge["to"], edge["accepted"], edge["refused"]) == (
        "default/patient",
        "default/doctor",
        3,
        2,
    )
    assert edge["rate"] == 2 / (RATE_WINDOW_MS / 1000)


def test_dead_letters_show_no_payload() -> None:
    dead = [DeadLetter("1-0", None, "default/doctor", "no handler", 3, NOW)]

    [row] = dead_letter_rows(snapshot(agent("default/patient", [], dead_letters=dead)))

    assert row == {
        "agent": "default/patient",
        "id": "1-0",
        "sender": "default/doctor",
        "type": None,
        "message_id": None,
        "reason": "no handler",
        "attempts": 3,
        "failed_at": NOW,
    }


def test_a_policy_is_applied_when_every_replica_of_its_agents_enforces_the_revision() -> None:
    doctor = agent("default/doctor", [])
    lagging = {"default/patient/r1": POLICY.revision, "default/doctor/r1": "old"}

    assert policy_rows(snapshot(PATIENT))["policies"][0]["status"] == "applied"
    [pending] = policy_rows(snapshot(PATIENT, doctor, enforcers=lagging))["policies"]
    assert pending["status"] == "pending"
    assert (pending["enforcing"], pending["behind"]) == (
        ["default/patient/r1"],
        ["default/doctor/r1"],
    )
    assert policy_rows(snapshot(PATIENT, enforcers={}))["policies"][0]["status"] == "idle"


def test_the_page_without_any_policy_or_agent() -> None:
    empty = page(snapshot(policy_document=None, policy_revision=None, enforcers={}))

    assert empty["agents"] == [] and empty["policies"] == {"revision": "", "policies": []}

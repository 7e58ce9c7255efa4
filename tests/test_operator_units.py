"""Pure parts of the operator: settings, credential planning, policy compilation, owners."""

from __future__ import annotations

from base64 import b64encode
from typing import Any

import pytest

from mas_core.identity.credentials import Anchor
from mas_core.identity.tokens import generate_private_key, key_id
from mas_core.manifests import parse_agent
from mas_core.policy.document import GatewayPolicySpec, compile_policies
from mas_core.policy.rules import Rule
from mas_operator.builders import credentials_secret
from mas_operator.config import ConfigError, OperatorConfig
from mas_operator.credentials import plan_credentials, read_existing, token_due
from mas_operator.kube import NotOwnedError, ensure_controlled
from mas_operator.policies import compile_cluster, enforcement

NOW = 1_800_000_000.0


def make_anchor() -> Anchor:
    key = generate_private_key()
    return Anchor(key, key.verify_key, key_id(key.verify_key))


def make_agent(**spec: Any) -> Any:
    return parse_agent(
        {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "worker", "namespace": "team"},
            "spec": {"image": "w:1", "roles": ["analyst"], **spec},
        },
        "test",
    )


# -- settings ----------------------------------------------------------------------------------


def test_config_takes_the_admin_password_from_its_own_variable() -> None:
    config = OperatorConfig.from_env(
        {
            "MAS_REDIS_URL": "redis://redis.mas-system.svc:6379/0",
            "MAS_REDIS_PASSWORD": "s3cr:et",
            "MAS_WATCH_NAMESPACES": "a, b,,",
            "MAS_STANDALONE": "true",
        }
    )
    assert config.redis_url == "redis://:s3cr%3Aet@redis.mas-system.svc:6379/0"
    assert config.agent_redis_url == "redis://redis.mas-system.svc:6379/0"
    assert config.namespaces == ("a", "b")
    assert not config.clusterwide
    assert config.standalone
    assert "s3cr" not in repr(config)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "MAS_REDIS_URL is required"),
        ({"MAS_REDIS_URL": "http://x"}, "redis://HOST:PORT"),
        ({"MAS_TOKEN_TTL_SECONDS": "10"}, "between 60 and 86400"),
        ({"MAS_TOKEN_TTL_SECONDS": "soon"}, "must be a number"),
        ({"MAS_STANDALONE": "perhaps"}, "true or false"),
        ({"MAS_ALLOW_HOST_PATH": "sometimes"}, "MAS_ALLOW_HOST_PATH must be true or false"),
        ({"MAS_LOG_LEVEL": "LOUD"}, "MAS_LOG_LEVEL"),
        ({"MAS_AGENT_REDIS_URL": "redis://u:p@h:1"}, "must not carry credentials"),
        ({"MAS_LOG_FORMAT": "xml"}, "MAS_LOG_FORMAT='xml' must be one of text, json"),
        ({"MAS_OTLP_ENDPOINT": "collector:4318"}, "MAS_OTLP_ENDPOINT must be http"),
        ({"MAS_OTLP_ENDPOINT": "https://u:p@collector"}, "must not carry credentials"),
    ],
)
def test_bad_settings_fail_at_start_up_with_the_variable_named(
    env: dict[str, str], words: str
) -> None:
    base = {"MAS_REDIS_URL": "redis://127.0.0.1:6379"} if "MAS_REDIS_URL" not in env else {}
    with pytest.raises(ConfigError, match=words):
        OperatorConfig.from_env({**base, **env} if env else {})


def test_agents_get_nothing_of_the_node_unless_the_settings_say_so() -> None:
    strict = OperatorConfig.from_env({"MAS_REDIS_URL": "redis://r:6379"})
    assert not (strict.allow_host_network or strict.allow_host_path or strict.allow_sidecar_image)
    assert strict.operator_service_account == "mas-operator"
    opened = OperatorConfig.from_env(
        {
            "MAS_REDIS_URL": "redis://r:6379",
            "MAS_ALLOW_HOST_NETWORK": "true",
            "MAS_ALLOW_HOST_PATH": "1",
            "MAS_ALLOW_SIDECAR_IMAGE": "yes",
            "MAS_OPERATOR_SERVICE_ACCOUNT": "mas-op",
        }
    )
    assert opened.allow_host_network and opened.allow_host_path and opened.allow_sidecar_image
    assert opened.operator_service_account == "mas-op"


# -- credentials -------------------------------------------------------------------------------


def secret_of(plan_files: dict[str, bytes]) -> dict[str, Any]:
    return credentials_secret(agent=make_agent(), owner_uid="u1", files=plan_files)


def test_a_reconcile_that_changes_nothing_keeps_key_password_and_token() -> None:
    anchor, agent = make_anchor(), make_agent()
    first = plan_credentials(
        agent=agent,
        anchor=anchor,
        existing=read_existing(None, anchor=anchor, agent_id=agent.agent_id),
        redis_url="redis://r:6379",
        ttl_seconds=3600,
        now=NOW,
    )
    assert first.reissued
    existing = read_existing(secret_of(first.files), anchor=anchor, agent_id=agent.agent_id)
    second = plan_credentials(
        agent=agent,
        anchor=anchor,
        existing=existing,
        redis_url="redis://r:6379",
        ttl_seconds=3600,
        now=NOW + 60,
    )
    assert not second.reissued
    assert second.files == first.files  # the API token too: the agent's env keeps working
    assert b"mas-agent.team.worker:" in first.files["redis-url"]
    assert len(first.files["api-token"]) >= 43


def test_the_token_is_renewed_past_half_its_life_or_when_roles_change() -> None:
    anchor, agent = make_anchor(), make_agent()
    plan = plan_credentials(
        agent=agent,
        anchor=anchor,
        existing=read_existing(None, anchor=anchor, agent_id=agent.agent_id),
        redis_url="redis://r:6379",
        ttl_seconds=3600,
        now=NOW,
    )
    assert not token_due(plan.claims, agent=agent, ttl_seconds=3600, now=NOW + 1799)
    assert token_due(plan.claims, agent=agent, ttl_seconds=3600, now=NOW + 1801)
    assert token_due(plan.claims, agent=make_agent(roles=["other"]), ttl_seconds=3600, now=NOW)
    existing = read_existing(secret_of(plan.files), anchor=anchor, agent_id=agent.agent_id)
    renewed = plan_credentials(
        agent=agent,
        anchor=anchor,
        existing=existing,
        redis_url="redis://r:6379",
        ttl_seconds=3600,
        now=NOW + 1801,
    )
    assert renewed.reissued
    assert renewed.files["agent.key"] == plan.files["agent.key"]
    assert renewed.files["redis-url"] == plan.files["redis-url"]
    assert renewed.files["api-token"] == plan.files["api-token"]
    assert renewed.claims.exp == int(NOW + 1801 + 3600)


def test_a_token_from_another_anchor_or_garbage_is_replaced() -> None:
    agent = make_agent()
    old_anchor, new_anchor = make_anchor(), make_anchor()
    plan = plan_credentials(
        agent=agent,
        anchor=old_anchor,
        existing=read_existing(None, anchor=old_anchor, agent_id=agent.agent_id),
        redis_url="redis://r:6379",
        ttl_seconds=3600,
        now=NOW,
    )
    existing = read_existing(secret_of(plan.files), anchor=new_anchor, agent_id=agent.agent_id)
    assert existing.claims is None and existing.agent_key is not None
    garbage = {"data": {"agent.key": b64encode(b"nope").decode(), "token": "!!"}}
    broken = read_existing(garbage, anchor=new_anchor, agent_id=agent.agent_id)
    assert broken.agent_key is None and broken.claims is None and broken.password is None
    assert broken.api_token is None  # a Secret from before API tokens gets a new one


# -- policies ----------------------------------------------------------------------------------


def policy(name: str, spec: dict[str, Any], namespace: str = "team") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_compile_keeps_the_last_good_version_of_an_invalid_policy() -> None:
    good = policy("main", {"rules": [{"name": "ask", "action": "allow", "types": ["q.*"]}]})
    published, verdicts = compile_cluster([good], None)
    assert [v.valid for v in verdicts] == [True]
    bad = policy("main", {"rules": [{"name": "ask", "action": "perhaps"}]})
    kept, verdicts = compile_cluster([bad], published)
    assert kept.revision == published.revision
    assert verdicts[0].in_force and not verdicts[0].valid
    assert "spec.rules[0].action" in (verdicts[0].error or "")
    never, verdicts = compile_cluster([bad], None)
    assert never.policies == [] and not verdicts[0].in_force


def test_compile_skips_policies_being_deleted() -> None:
    doomed = policy("old", {})
    doomed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    document, verdicts = compile_cluster([doomed, policy("new", {})], None)
    assert [entry.name for entry in document.policies] == ["team/new"]
    assert [v.key for v in verdicts] == ["team/new"]


def test_enforcement_counts_selected_agents_and_their_current_replicas() -> None:
    document = compile_policies(
        [("team", "main", GatewayPolicySpec(agents=["w*"], rules=[Rule(name="r", action="allow")]))]
    )
    reach = enforcement(
        document,
        "team/main",
        enforcers={
            "team/worker/p1": document.revision,
            "team/worker/p2": "old",
            "team/wise/p1": document.revision,
            "other/worker/p1": document.revision,
        },
        registered=["team/worker", "team/wise", "team/zed", "other/worker"],
    )
    assert (reach.selected_agents, reach.enforcing_replicas) == (2, 2)
    assert enforcement(document, "team/absent", enforcers={}, registered=[]).selected_agents == 0


# -- owners ------------------------------------------------------------------------------------


def test_only_objects_an_agent_of_that_name_controls_are_updated() -> None:
    owner = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "name": "web",
        "uid": "u2",
        "controller": True,
    }

    def deployment(*refs: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": "web", "namespace": "team", "ownerReferences": list(refs)}
        return {"kind": "Deployment", "metadata": meta}

    # Its own, or its predecessor's (same name, deleted and created again): taken over.
    ensure_controlled(deployment({**owner, "uid": "u1"}), owner)
    ensure_controlled(deployment({"kind": "ReplicaSet", "name": "x"}, owner), owner)
    for refs, words in (
        ((), "not controlled by any owner"),
        (({**owner, "controller": False},), "not controlled by any owner"),
        (({**owner, "name": "other"},), "controlled by Agent other"),
        (({**owner, "apiVersion": "evil.dev/v1"},), "controlled by Agent web"),
        (({"kind": "HelmRelease", "name": "web", "controller": True},), "HelmRelease web"),
    ):
        with pytest.raises(NotOwnedError, match=words) as refused:
            ensure_controlled(deployment(*refs), owner)
        assert refused.value.status == 409
        assert "Deployment team/web exists" in str(refused.value)

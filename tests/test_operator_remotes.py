"""Which agents' sidecars get an external agent's token, and what an ExternalAgent may not name.

Pure functions of :mod:`mas_operator.remotes`; the handlers that apply them run in
tests/test_operator_handlers.py and, on a cluster, in the e2e suite.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from typing import Any

import pytest

from mas_core.manifests import AgentManifest, ExternalAgentManifest, ManifestError
from mas_core.policy.document import GatewayPolicySpec, compile_policies
from mas_operator.config import OperatorConfig
from mas_operator.remotes import (
    Remote,
    callable_tokens,
    parse_external_body,
    refusals,
    remotes_secret,
    token_of,
)

SETTINGS = OperatorConfig(redis_url="redis://r:6379/0", agent_redis_url="redis://r:6379/0")


def agent(name: str = "worker", roles: tuple[str, ...] = ("reader",)) -> AgentManifest:
    return AgentManifest.model_validate({
        "apiVersion": "mas.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {"image": "registry.example/worker:1", "roles": list(roles)},
    })  # fmt: skip


def external(name: str = "glossary", namespace: str = "team", **spec: Any) -> ExternalAgentManifest:
    return parse_external_body({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": "https://glossary.example/a2a", "capabilities": ["define"], **spec},
    })  # fmt: skip


def policy(*rules: dict[str, Any]) -> Any:
    spec = GatewayPolicySpec.model_validate({"rules": list(rules)})
    return compile_policies([("team", "main", spec)])


def allow(**sides: Any) -> dict[str, Any]:
    return {"name": "allow", "action": "allow", "types": ["ask.*"], **sides}


GLOSSARY = Remote(external(), b"glossary-token")
ATLAS = Remote(external("atlas", capabilities=["locate"]), b"atlas-token")


def test_an_agent_gets_the_tokens_of_the_external_agents_its_policy_lets_it_call_only() -> None:
    document = policy(allow(**{"from": {"agents": ["worker"]}, "to": {"agents": ["glossary"]}}))
    assert callable_tokens(agent(), [GLOSSARY, ATLAS], document) == {
        "team.glossary": b"glossary-token"
    }
    assert callable_tokens(agent("other"), [GLOSSARY, ATLAS], document) == {}


def test_rules_by_role_and_capability_select_the_same_way_as_discovery() -> None:
    document = policy(allow(**{"from": {"roles": ["reader"]}, "to": {"capabilities": ["locate"]}}))
    assert callable_tokens(agent(), [GLOSSARY, ATLAS], document) == {"team.atlas": b"atlas-token"}
    assert callable_tokens(agent(roles=("writer",)), [GLOSSARY, ATLAS], document) == {}


def test_a_deny_of_every_type_or_no_policy_at_all_gives_no_token() -> None:
    deny_all = {"name": "no", "action": "deny", "types": ["*"], "to": {"agents": ["glossary"]}}
    document = policy(allow(), deny_all)
    assert callable_tokens(agent(), [GLOSSARY, ATLAS], document) == {"team.atlas": b"atlas-token"}
    assert callable_tokens(agent(), [GLOSSARY, ATLAS], None) == {}


def test_an_open_remote_or_a_missing_token_puts_nothing_in_the_secret() -> None:
    assert callable_tokens(agent(), [Remote(external(), None)], policy(allow())) == {}


def test_the_remotes_secret_is_the_agents_with_one_key_per_external_agent() -> None:
    secret = remotes_secret(agent=agent(), owner_uid="uid-1", tokens={"team.glossary": b"t0k"})
    assert secret["metadata"]["name"] == "worker-mas-remotes"
    assert secret["metadata"]["namespace"] == "team"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert {key: b64decode(value) for key, value in secret["data"].items()} == {
        "team.glossary": b"t0k"
    }
    assert remotes_secret(agent=agent(), owner_uid="uid-1", tokens={})["data"] == {}


@pytest.mark.parametrize(
    ("namespace", "secret"),
    [
        ("team", "victim-mas-credentials"),  # an agent's key, token and Redis password
        ("team", "victim-mas-remotes"),  # another agent's external tokens
        ("mas-system", "anything"),  # the trust anchor's key, the Redis administrator password
    ],
)
def test_an_external_agent_may_not_name_a_secret_the_operator_keeps_for_agents_or_itself(
    namespace: str, secret: str
) -> None:
    hostile = external(
        namespace=namespace, credentials={"secretKeyRef": {"name": secret, "key": "agent.key"}}
    )
    settings = OperatorConfig(
        redis_url="redis://r:6379/0", agent_redis_url="redis://r:6379/0",
        operator_namespace="mas-system",
    )  # fmt: skip
    [reason] = refusals(hostile, settings)
    assert reason.startswith("spec.credentials.secretKeyRef:") and secret in reason


def test_an_external_agent_with_its_own_token_secret_or_none_is_accepted() -> None:
    own = external(credentials={"secretKeyRef": {"name": "a2a-glossary", "key": "token"}})
    assert refusals(own, SETTINGS) == []
    assert refusals(external(), SETTINGS) == []


def test_the_token_is_read_from_the_secret_key_or_is_none() -> None:
    secret = {"data": {"token": b64encode(b"s3cret").decode()}}
    assert token_of(secret, "token") == b"s3cret"
    assert token_of(secret, "other") is None
    assert token_of(None, "token") is None


def test_an_invalid_external_agent_is_a_manifest_error_naming_the_field() -> None:
    with pytest.raises(ManifestError, match=r"spec\.url"):
        parse_external_body({"metadata": {"name": "x", "namespace": "team"},
                             "spec": {"url": "ftp://nowhere"}})  # fmt: skip

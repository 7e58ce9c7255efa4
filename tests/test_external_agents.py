"""The ``ExternalAgent`` resource: an A2A agent outside mas, in discovery like any agent.

The manifest is validated like the other kinds; the control plane registers it (entry marked
with its endpoint, a lease that does not expire, its description as metadata), and a real
sidecar's discovery lists it as external, with its card.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import jsonschema
import pytest
import redis
import yaml
from api import Api

from mas_cli.local.plan import external_credentials
from mas_cli.local.secrets import LocalSecrets
from mas_cli.manifest_files import load_external_agents
from mas_control.provision import forget_agent, register_agent, register_external_agent
from mas_core.a2a_remotes import credentials_file
from mas_core.keys import REGISTRY_AGENTS
from mas_core.manifests import AgentManifest, ManifestError, parse_external_agent
from mas_core.registry_entries import entry_document, parse_entry

if TYPE_CHECKING:
    from conftest import Sidecars

REMOTE = "default/weather"


def _document(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "ExternalAgent",
        "metadata": {"name": "weather"},
        "spec": {"url": "http://127.0.0.1:9999/", **spec},
    }


def test_an_external_agent_names_its_endpoint_credentials_and_capabilities() -> None:
    external = parse_external_agent(
        _document(
            capabilities=["forecast"],
            credentials={"secretKeyRef": {"name": "weather", "key": "token"}},
        ),
        "weather.yaml",
    )
    assert external.agent_id == REMOTE
    assert external.spec.capabilities == ["forecast"]
    assert external.spec.credentials is not None
    assert external.spec.credentials.secret_key_ref.key == "token"


def test_the_examples_external_agent_is_valid_against_its_crd() -> None:
    root = Path(__file__).resolve().parent.parent
    crd = yaml.safe_load((root / "crds" / "externalagent.yaml").read_text())
    document = yaml.safe_load((root / "examples" / "a2a" / "glossary.yaml").read_text())
    jsonschema.validate(document, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert load_external_agents(root / "examples" / "a2a")[0].spec.capabilities == ["define"]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:9999", "http://a b/"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(ManifestError, match=r"weather.yaml: spec.url"):
        parse_external_agent(_document(url=url), "weather.yaml")


def test_external_agents_are_read_from_the_manifest_directory(tmp_path: Path) -> None:
    (tmp_path / "weather.yaml").write_text(
        "apiVersion: mas.dev/v1alpha1\nkind: ExternalAgent\nmetadata: {name: weather}\n"
        "spec: {url: 'http://127.0.0.1:9999/'}\n"
    )
    (tmp_path / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")
    assert [e.agent_id for e in load_external_agents(tmp_path)] == [REMOTE]


def test_an_external_agent_named_like_an_agent_is_refused(tmp_path: Path) -> None:
    # Its registry entry would replace the agent's: messages to the agent would go to its URL.
    (tmp_path / "weather.yaml").write_text(
        "apiVersion: mas.dev/v1alpha1\nkind: ExternalAgent\nmetadata: {name: weather}\n"
        "spec: {url: 'http://127.0.0.1:9999/'}\n"
    )
    agent = AgentManifest.model_validate({
        "apiVersion": "mas.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "weather"},
        "spec": {"local": {"command": ["python", "weather.py"]}},
    })  # fmt: skip
    with pytest.raises(ManifestError, match="default/weather is already an Agent"):
        load_external_agents(tmp_path, [agent])


def test_an_external_agent_never_replaces_the_registry_entry_of_an_agent(
    redis_client: redis.Redis,
) -> None:
    register_agent(redis_client, REMOTE, ["forecast"], ["reader"])
    assert not register_external_agent(redis_client, REMOTE, ["x"], "http://127.0.0.1:9/", "")
    entry = parse_entry(redis_client.hget(REGISTRY_AGENTS, REMOTE))
    assert entry is not None and entry.external is None and entry.roles == ("reader",)
    forget_agent(redis_client, REMOTE)
    assert register_external_agent(redis_client, REMOTE, ["x"], "http://127.0.0.1:9/", "")
    assert register_external_agent(redis_client, REMOTE, ["y"], "http://127.0.0.1:9/", "")
    # An Agent's registration always wins: the operator provisions it over an external entry.
    register_agent(redis_client, REMOTE, ["forecast"], [])
    entry = parse_entry(redis_client.hget(REGISTRY_AGENTS, REMOTE))
    assert entry is not None and entry.external is None


def test_a_token_missing_from_the_secrets_file_is_an_error_naming_the_line_to_add() -> None:
    external = parse_external_agent(
        _document(credentials={"secretKeyRef": {"name": "weather", "key": "token"}}), "w.yaml"
    )
    with pytest.raises(ManifestError, match="add the line weather/token="):
        external_credentials([external], LocalSecrets({}, None))
    tokens = external_credentials([external], LocalSecrets({("weather", "token"): "t" * 20}, None))
    assert tokens == {credentials_file(REMOTE): "t" * 20} == {"default.weather": "t" * 20}


def test_the_registry_entry_of_an_external_agent_carries_its_endpoint() -> None:
    entry = parse_entry(entry_document(["forecast"], [], "http://127.0.0.1:9999/"))
    assert entry is not None and entry.external == "http://127.0.0.1:9999/"
    assert parse_entry(entry_document(["x"], ["r"])) == parse_entry(
        b'{"capabilities":["x"],"roles":["r"]}'
    )
    assert parse_entry(b'{"capabilities":[],"roles":[],"external":1}') is None


async def test_discovery_lists_an_external_agent_marked_external_with_its_card(
    sidecars: Sidecars, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    register_external_agent(
        redis_client, REMOTE, ["forecast"], "http://127.0.0.1:9999/", "Tells the weather."
    )
    try:
        api = Api(http, sidecars.start("default/asker"))
        status, found = await api.call("GET", "/v1/agents?capability=forecast&format=a2a-card")
    finally:
        forget_agent(redis_client, REMOTE)
    assert status == 200
    assert found["agents"] == [
        {
            "id": REMOTE,
            "capabilities": ["forecast"],
            "metadata": {"description": "Tells the weather."},
            "external": True,
        }
    ]
    assert found["cards"][0]["name"] == REMOTE
    assert found["cards"][0]["description"] == "Tells the weather."

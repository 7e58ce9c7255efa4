"""Persisted agent state with revisions, and capability discovery of live agents."""

from __future__ import annotations

import asyncio

import aiohttp
import redis
from api import Api
from conftest import ALLOW_ALL, Sidecars
from waiting import eventually

from mas_core.keys import REGISTRY_LEASES


async def test_state_starts_empty_and_each_write_bumps_the_revision(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))

    assert await alice.call("GET", "/v1/state") == (200, {"state": {}, "revision": 0})
    status, written = await alice.call("PUT", "/v1/state", {"state": {"items": [1, 2]}})
    assert (status, written) == (200, {"state": {"items": [1, 2]}, "revision": 1})
    async with http.get(alice.base_url + "/v1/state", headers=alice.headers) as answer:
        assert answer.headers["ETag"] == '"1"'


async def test_a_write_against_a_stale_revision_gets_412_and_changes_nothing(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    await alice.call("PUT", "/v1/state", {"state": {"v": 1}}, headers={"If-Match": "0"})

    status, body = await alice.call(
        "PUT", "/v1/state", {"state": {"v": 2}}, headers={"If-Match": '"0"'}
    )

    assert (status, body["error"]["code"]) == (412, "revision_conflict")
    assert await alice.call("GET", "/v1/state") == (200, {"state": {"v": 1}, "revision": 1})
    status, body = await alice.call(
        "PUT", "/v1/state", {"state": {}}, headers={"If-Match": "yesterday"}
    )
    assert (status, body["error"]["code"]) == (400, "invalid_revision")


async def test_patch_merges_objects_replaces_lists_and_deletes_nulls(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    await alice.call(
        "PUT", "/v1/state", {"state": {"a": {"x": 1, "y": 2}, "list": [1], "gone": True}}
    )

    status, body = await alice.call(
        "PATCH", "/v1/state", {"state": {"a": {"y": 3}, "list": [2, 3], "gone": None}}
    )

    assert status == 200
    assert body == {"state": {"a": {"x": 1, "y": 3}, "list": [2, 3]}, "revision": 2}


async def test_concurrent_patches_from_two_replicas_all_land(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    replicas = [Api(http, sidecars.start("default/alice", replica=f"alice-{n}")) for n in range(2)]

    await asyncio.gather(
        *(replicas[n % 2].call("PATCH", "/v1/state", {"state": {f"key{n}": n}}) for n in range(20))
    )

    _, body = await replicas[0].call("GET", "/v1/state")
    assert body["state"] == {f"key{n}": n for n in range(20)}
    assert body["revision"] == 20


async def test_state_survives_a_sidecar_restart(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    sidecar = sidecars.start("default/alice")
    await Api(http, sidecar).call("PUT", "/v1/state", {"state": {"kept": {"deep": [1]}}})

    sidecar.kill()
    sidecar.start()

    _, body = await Api(http, sidecar).call("GET", "/v1/state")
    assert body == {"state": {"kept": {"deep": [1]}}, "revision": 1}


async def test_discovery_finds_live_agents_having_every_capability(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice", capabilities=["chat"]))
    sidecars.start("default/doctor", capabilities=["diagnose", "chat"])
    sidecars.start("default/nurse", capabilities=["chat"])

    _, both = await alice.call("GET", "/v1/agents?capability=chat&capability=diagnose")
    _, chat = await alice.call("GET", "/v1/agents?capability=chat")
    _, everyone = await alice.call("GET", "/v1/agents")

    assert [a["id"] for a in both["agents"]] == ["default/doctor"]
    assert [a["id"] for a in chat["agents"]] == ["default/alice", "default/doctor", "default/nurse"]
    assert len(everyone["agents"]) == 3
    assert both["agents"][0]["capabilities"] == ["diagnose", "chat"]


async def test_an_agent_whose_sidecars_are_gone_leaves_discovery_by_itself(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice", MAS_REGISTRY_TTL_MS="2000"))
    doctor = sidecars.start("default/doctor", capabilities=["diagnose"], MAS_REGISTRY_TTL_MS="2000")
    first_lease = redis_client.zscore(REGISTRY_LEASES, "default/doctor")

    async def diagnosers() -> list[str]:
        _, listing = await alice.call("GET", "/v1/agents?capability=diagnose")
        return [a["id"] for a in listing["agents"]]

    async def gone() -> bool:
        return not await diagnosers()

    # The live sidecar renews its lease, which keeps it listed beyond one TTL.
    await eventually(lambda: redis_client.zscore(REGISTRY_LEASES, "default/doctor") > first_lease)
    before = await diagnosers()
    doctor.kill()
    await eventually(gone, "the killed agent gone from discovery")

    assert before == ["default/doctor"]
    assert (await alice.call("POST", "/v1/messages", {"to": "doctor", "type": "x"}))[0] == 202


async def test_metadata_published_by_the_agent_shows_in_discovery_and_self(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice", replica="alice-0"))
    doctor = Api(
        http,
        sidecars.start("default/doctor", capabilities=["diagnose"], MAS_METADATA='{"v": 1}'),
    )
    _, initial = await alice.call("GET", "/v1/agents?capability=diagnose")

    status, me = await doctor.call("PUT", "/v1/self", {"metadata": {"model": "rules", "v": 2}})
    _, listed = await alice.call("GET", "/v1/agents?capability=diagnose")
    _, alice_self = await alice.call("GET", "/v1/self")

    assert initial["agents"][0]["metadata"] == {"v": 1}
    assert status == 200
    assert me["metadata"] == {"model": "rules", "v": 2}
    assert listed["agents"][0]["metadata"] == {"model": "rules", "v": 2}
    assert alice_self == {
        "id": "default/alice",
        "namespace": "default",
        "replica": "alice-0",
        "capabilities": [],
        "metadata": {},
        "roles": [],
        "policy": {"revision": ALLOW_ALL.revision, "error": None},
    }

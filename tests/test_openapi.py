"""The OpenAPI document served on ``/v1/openapi.json`` says what the sidecar really answers.

* The app registers exactly the operations the document lists (aiohttp's automatic ``HEAD`` of
  each ``GET`` aside), each with a unique camelCase ``operationId``; every schema in it is valid
  JSON Schema 2020-12 and every reference resolves.
* Real sidecars on loopback, over a real Valkey/Redis, are called on every operation of the
  document, successes and errors alike; each answer's status must be one the operation declares,
  and its body must validate against the schema declared for that status, closed: an answer
  with a field the schema does not declare fails too. Declared required headers (``ETag``,
  ``WWW-Authenticate``) must be there, and a 429 or 503 carries the documented ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import redis
from api import Api
from conftest import Sidecars
from jsonschema import Draft202012Validator
from policies import publish
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from waiting import GUARD_SECONDS, eventually

from mas_cli.local.processes import SidecarProcess
from mas_sidecar.api.app import build_app
from mas_sidecar.api.openapi import build_openapi
from mas_sidecar.config import SidecarConfig

SPEC: dict[str, Any] = dict(build_openapi())
BASE = "urn:mas:openapi"
OPERATIONS = {
    operation["operationId"]: (method.upper(), path)
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
}
SSN = "123-45-6789"  # what the DLP detector us_ssn blocks


def pointer(*parts: str) -> str:
    """A JSON pointer into the document (RFC 6901)."""
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def closed(schema: Any) -> Any:
    """``schema`` with every object that lists its properties closed to any other property."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        result["additionalProperties"] = False
    return result


def registry(document: dict[str, Any]) -> Registry[Any]:
    return Registry().with_resource(
        BASE, Resource.from_contents(document, default_specification=DRAFT202012)
    )


STRICT = registry(closed(copy.deepcopy(SPEC)))


def validate(location: str, instance: Any) -> None:
    """Validate ``instance`` against the schema at ``location`` of the (closed) document."""
    Draft202012Validator({"$ref": BASE + location}, registry=STRICT).validate(instance)


def test_the_app_serves_exactly_the_operations_of_the_document() -> None:
    config = SidecarConfig.build(
        agent_id="default/alice",
        port=1,
        redis_url="redis://127.0.0.1:1",
        env={"MAS_SIDECAR_INSECURE_NO_TOKEN": "true"},
    )
    routes = {
        (route.method, route.resource.canonical)
        for route in build_app(config).router.routes()
        if route.resource is not None
    }
    gets = {path for method, path in routes if method == "GET"}
    served = {(method, path) for method, path in routes if (method != "HEAD" or path not in gets)}

    assert served == set(OPERATIONS.values())


def test_operation_ids_are_unique_and_camel_case() -> None:
    ids = [
        operation["operationId"]
        for methods in SPEC["paths"].values()
        for operation in methods.values()
    ]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id) for operation_id in ids), ids
    assert {"sendMessage", "streamDeliveries", "ackDelivery", "getSelf"} <= set(ids)


def schemas_of(node: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(location, schema)`` of every schema the document declares for bodies, answers and
    parameters."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("schema", "x-event-data"):
                yield (*where, key), value
            else:
                yield from schemas_of(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schemas_of(value, (*where, str(index)))


def test_every_schema_is_valid_and_every_reference_resolves() -> None:
    resolver = registry(SPEC).resolver(BASE)
    for name, schema in SPEC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        assert schema.get("title", name) == name
    declared = list(schemas_of(SPEC["paths"]))
    assert len(declared) > len(OPERATIONS)
    for _, schema in declared:
        Draft202012Validator.check_schema(schema)
    references = set(re.findall(r'"\$ref":"([^"]+)"', orjson.dumps(SPEC).decode()))
    assert len(references) > 10
    for reference in references:
        assert resolver.lookup(reference).contents, reference
    for methods in SPEC["paths"].values():
        for operation in methods.values():
            for status, answer in operation["responses"].items():
                assert ("content" in answer) == (status != "204"), (operation, status)
                if status in ("429", "503"):
                    assert "Retry-After" in answer["headers"]
    error = SPEC["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "message"]


class Conformance:
    """Calls operations by ``operationId`` and checks each answer against the document."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.seen: set[tuple[str, int]] = set()

    def _operation(self, operation_id: str) -> tuple[str, str, dict[str, Any]]:
        method, path = OPERATIONS[operation_id]
        return method, path, SPEC["paths"][path][method.lower()]

    def _declared(self, operation_id: str, status: int) -> tuple[str, dict[str, Any]]:
        method, path, operation = self._operation(operation_id)
        assert str(status) in operation["responses"], f"{operation_id} answered {status}"
        location = pointer("paths", path, method.lower(), "responses", str(status))
        return location, operation["responses"][str(status)]

    def _check_headers(self, answer: dict[str, Any], headers: Any) -> None:
        for name, header in answer.get("headers", {}).items():
            if header.get("required"):
                assert name in headers, name
        if "Retry-After" in headers:
            assert "Retry-After" in answer.get("headers", {})
            assert int(headers["Retry-After"]) >= 1

    async def call(
        self,
        sidecar: SidecarProcess,
        operation_id: str,
        expected: int,
        *,
        id: str | None = None,
        body: Any = None,
        data: bytes | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        """Call the operation on ``sidecar``; check that it answered ``expected``, as the
        document declares. The parsed JSON answer (the text for text answers)."""
        method, path, _ = self._operation(operation_id)
        sent = dict(Api(self.http, sidecar, token=token).headers)
        if body is not None:
            data = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        sent |= headers or {}
        url = sidecar.url + (path if id is None else path.replace("{id}", id)) + query
        async with self.http.request(method, url, data=data, headers=sent) as answer:
            raw = await answer.read()
            status, received, ctype = answer.status, answer.headers, answer.content_type
        assert status == expected, (operation_id, status, raw[:500])
        location, declared = self._declared(operation_id, status)
        self._check_headers(declared, received)
        self.seen.add((operation_id, status))
        if "content" not in declared:
            assert raw == b"", (operation_id, raw)
            return None
        [media_type] = declared["content"]
        assert ctype == media_type, (operation_id, ctype)
        if media_type != "application/json":
            validate(location + pointer("content", media_type, "schema")[1:], raw.decode())
            return raw.decode()
        document = orjson.loads(raw)
        validate(location + pointer("content", media_type, "schema")[1:], document)
        return document

    @contextlib.asynccontextmanager
    async def deliveries(self, sidecar: SidecarProcess) -> AsyncIterator[aiohttp.ClientResponse]:
        """A delivery stream of ``sidecar``, open (its answer checked against the document)."""
        _, declared = self._declared("streamDeliveries", 200)
        async with self.http.get(
            sidecar.url + "/v1/deliveries",
            headers=Api(self.http, sidecar).headers,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as answer:
            assert answer.status == 200
            assert answer.content_type == "text/event-stream"
            self._check_headers(declared, answer.headers)
            self.seen.add(("streamDeliveries", 200))
            yield answer

    async def next_events(
        self, sidecar: SidecarProcess, count: int, type: str | None = None
    ) -> list[Any]:
        """The next ``count`` deliveries of ``type`` (the others stay leased), not answered; each
        event's data checked against the schema the document declares for it."""
        location, _ = self._declared("streamDeliveries", 200)
        data = location + pointer("content", "text/event-stream", "x-event-data")[1:]
        found: list[Any] = []
        async with asyncio.timeout(GUARD_SECONDS), self.deliveries(sidecar) as answer:
            async for line in answer.content:
                if not line.startswith(b"data: "):
                    continue
                event = orjson.loads(line[6:])
                validate(data, event)
                if type is None or event["type"] == type:
                    found.append(event)
                if len(found) == count:
                    break
        return found


async def held_connection(sidecar: SidecarProcess) -> asyncio.StreamWriter | None:
    """A connection to ``sidecar`` that it served (one ``/healthz``) and keeps open; None when
    it refused it (a closed connection it has not counted out yet)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    status = await reader.readline()
    await reader.readuntil(b"\r\n\r\n")
    if status.split()[1] == b"200":
        return writer
    writer.close()
    return None


async def test_every_operation_answers_as_the_document_declares(
    sidecars: Sidecars,
    http: aiohttp.ClientSession,
    redis_client: redis.Redis,
) -> None:
    policy = publish(
        redis_client,
        rules=[
            {"name": "all", "action": "allow"},
            {"name": "no-secrets", "action": "deny", "types": ["secret"]},
        ],
        dlp={"detectors": {"us_ssn": "block"}},
    )
    alice = sidecars.start("default/alice", capabilities=["chat"], MAS_ROLES="staff")
    bob = sidecars.start("default/bob")
    for sidecar in (alice, bob):
        await Api(http, sidecar).wait_for_revision(policy.revision)
    checked = Conformance(http)
    call = checked.call

    # The system operations.
    served = await call(alice, "getOpenApi", 200)
    assert served == orjson.loads(orjson.dumps(SPEC))
    await call(alice, "checkLiveness", 200, token="")
    await call(alice, "checkReadiness", 200, token="")
    assert "mas_http_requests_total" in await call(alice, "getMetrics", 200)

    # This agent and discovery.
    me = await call(alice, "getSelf", 200)
    assert (me["roles"], me["policy"]["revision"]) == (["staff"], policy.revision)
    await call(alice, "publishMetadata", 200, body={"metadata": {"team": "a"}})
    await call(alice, "publishMetadata", 400, body={"metadata": "x"})
    await call(alice, "publishMetadata", 422, body={"metadata": {"id": SSN}})
    found = await call(bob, "discoverAgents", 200, query="?capability=chat")
    assert [agent["id"] for agent in found["agents"]] == ["default/alice"]
    await call(bob, "discoverAgents", 400, query="?" + "&".join(["capability=x"] * 40))
    cards = await call(bob, "discoverAgents", 200, query="?capability=chat&format=a2a-card")
    assert [card["name"] for card in cards["cards"]] == ["default/alice"]
    assert (await call(alice, "getAgentCard", 200))["name"] == "default/alice"

    # Sending, and the refusals of a send.
    await call(alice, "sendMessage", 202, body={"to": "bob", "type": "hello", "payload": 1})
    await call(alice, "sendMessage", 400, body={"to": "bob"})
    await call(alice, "sendMessage", 400, body=[1])
    await call(alice, "sendMessage", 401, body={"to": "bob", "type": "x"}, token="")
    await call(alice, "sendMessage", 403, body={"to": "bob", "type": "secret"})
    await call(alice, "sendMessage", 404, body={"to": "nobody", "type": "x"})
    await call(alice, "sendMessage", 413, body={"to": "bob", "type": "x", "payload": "x" * 2**21})
    await call(alice, "sendMessage", 415, data=b"to=bob", headers={"Content-Type": "text/plain"})
    await call(alice, "sendMessage", 422, body={"to": "bob", "type": "x", "payload": SSN})
    batch = await call(
        alice,
        "sendBatch",
        200,
        body={"messages": [{"to": "bob", "type": "hello"}, {"to": "bob", "type": "secret"}]},
    )
    assert [result["status"] for result in batch["results"]] == [202, 403]
    await call(alice, "sendBatch", 400, body={"messages": []})
    for n in range(3):
        await call(alice, "sendMessage", 202, body={"to": "bob", "type": "work", "payload": n})

    # Answering deliveries.
    first, second, third = await checked.next_events(bob, 3, "work")
    await call(bob, "extendDelivery", 204, id=first["id"])
    extended = await call(bob, "extendDeliveries", 200, body={"ids": [first["id"], "nope"]})
    assert extended == {"extended": [first["id"]], "unknown": ["nope"]}
    await call(bob, "replyToDelivery", 202, id=first["id"], body={"type": "done"})
    await call(bob, "ackDelivery", 204, id=first["id"])
    await call(bob, "ackDelivery", 404, id=first["id"])
    await call(bob, "extendDelivery", 404, id=first["id"])
    await call(bob, "nackDelivery", 204, id=second["id"])
    await call(bob, "nackDelivery", 400, id=second["id"], body={"delay_ms": -1})
    await call(bob, "nackDelivery", 404, id="nope", body={"delay_ms": 5})
    await call(bob, "rejectDelivery", 204, id=third["id"], body={"reason": "bad input"})
    await call(bob, "rejectDelivery", 400, id="x", body={})
    await call(bob, "rejectDelivery", 404, id=third["id"], body={"reason": "again"})
    await call(bob, "replyToDelivery", 404, id=third["id"], body={"type": "done"})
    acked = await call(bob, "ackDeliveries", 200, body={"ids": ["nope"]})
    assert acked == {"acked": [], "unknown": ["nope"]}
    await call(bob, "ackDeliveries", 400, body={"ids": []})
    await call(bob, "extendDeliveries", 415, data=b"ids", headers={"Content-Type": "text/plain"})

    # Dead letters.
    [fourth] = await checked.next_events(bob, 1, "work")  # the one nacked above, again
    await call(bob, "rejectDelivery", 204, id=fourth["id"], body={"reason": "worse input"})
    letters = (await call(bob, "listDeadLetters", 200, query="?limit=10"))["dead_letters"]
    reasons = [letter["reason"] for letter in letters]
    assert reasons == ["rejected: bad input", "rejected: worse input"]
    assert letters[0]["message"]["id"] == third["id"]
    await call(bob, "listDeadLetters", 400, query="?limit=0")
    await call(bob, "replayDeadLetter", 202, id=letters[0]["id"])
    await call(bob, "replayDeadLetter", 404, id=letters[0]["id"])
    await call(bob, "deleteDeadLetter", 204, id=letters[1]["id"])
    await call(bob, "deleteDeadLetter", 404, id=letters[1]["id"])

    # A request, its reply, and one reply too many; a request nobody answers in time.
    asking = asyncio.create_task(
        call(alice, "sendRequest", 200, body={"to": "bob", "type": "ask", "payload": 2})
    )
    [question] = await checked.next_events(bob, 1, "ask")
    await call(bob, "reportProgress", 202, id=question["id"], body={"text": "on it", "data": 1})
    await call(bob, "reportProgress", 400, id=question["id"], body={"text": ""})
    await call(bob, "reportProgress", 422, id=question["id"], body={"text": SSN})
    await call(bob, "replyToDelivery", 202, id=question["id"], body={"type": "answer"})
    await call(bob, "reportProgress", 409, id=question["id"], body={"text": "late"})
    await call(bob, "reportProgress", 404, id="nope", body={"text": "x"})
    await call(bob, "replyToDelivery", 409, id=question["id"], body={"type": "answer"})
    reply = await asking
    assert (reply["correlation_id"], reply["type"]) == (question["id"], "answer")
    await call(alice, "sendRequest", 504, body={"to": "bob", "type": "ask", "timeout_ms": 1})
    await call(alice, "sendRequest", 400, body={"to": "bob", "type": "ask", "timeout_ms": 0})

    await call(bob, "ackDelivery", 204, id=question["id"])

    # State.
    await call(alice, "getState", 200)
    await call(alice, "replaceState", 200, body={"state": {"a": {"x": 1}}})
    await call(alice, "replaceState", 412, body={"state": {}}, headers={"If-Match": "0"})
    await call(alice, "replaceState", 400, body={"state": {}}, headers={"If-Match": "yesterday"})
    await call(alice, "replaceState", 400, body={"state": [1]})
    patched = await call(alice, "patchState", 200, body={"state": {"a": {"y": 2}}})
    assert patched == {"state": {"a": {"x": 1, "y": 2}}, "revision": 2}
    await call(alice, "patchState", 412, body={"state": {}}, headers={"If-Match": "1"})
    assert (await call(alice, "getCompleted", 200, id="m-1"))["completed"] is False
    await call(alice, "recordCompleted", 204, id="m-1", body={"ttl_ms": 60_000})
    assert (await call(alice, "getCompleted", 200, id="m-1"))["completed"] is True
    await call(alice, "getCompleted", 400, id="m" * 129)
    await call(alice, "recordCompleted", 400, id="m-1", body={"ttl_ms": 0})

    # The caps: delivery streams (429) and connections (503), both with Retry-After.
    carol = sidecars.start("default/carol", MAS_MAX_SUBSCRIBERS="1", MAS_MAX_CONNECTIONS="3")
    async with checked.deliveries(carol):
        await call(carol, "streamDeliveries", 429)
        held = [await eventually(lambda: held_connection(carol), "a connection held")]
        held.append(await eventually(lambda: held_connection(carol), "a connection held"))
        await call(carol, "checkLiveness", 503, token="")  # 3 connections open: the cap
        await call(carol, "getSelf", 503)
        for writer in held:
            writer.close()

    operations = {operation_id for operation_id, _ in checked.seen}
    assert operations == set(OPERATIONS), set(OPERATIONS) - operations
    statuses = {status for _, status in checked.seen}
    assert {400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503, 504} <= statuses

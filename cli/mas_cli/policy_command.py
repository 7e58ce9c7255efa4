"""``mas policy validate PATH`` and ``mas policy apply PATH``: GatewayPolicy manifests checked
as the operator checks them, and published as the control plane publishes them.

``validate`` reads a YAML file or a directory's ``*.yaml``/``*.yml`` files, validates every
``GatewayPolicy`` with the operator's own reading of a resource
(:func:`mas_operator.policies.parse_resource`, so each error is the one its status would show)
and prints every problem of every manifest, not only the first; any problem exits with
:data:`~mas_cli.options.USAGE_ERROR`. ``apply`` does the same and then compiles the policies
into one document (:func:`mas_core.policy.document.compile_policies`) and publishes it to the
Redis at ``--redis-url`` (:func:`mas_control.provision.publish_policy`), for sidecars run
without the operator: the policies given become the whole policy in force, and running
sidecars load the new revision at once. Nothing is published when a manifest has a problem.
Called by :mod:`mas_cli.main`; needs the ``local`` extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import redis

from mas_cli.manifest_files import policy_documents
from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail, redis_url
from mas_control.provision import publish_policy
from mas_core import redis_clients
from mas_core.acl import masked_url
from mas_core.manifests import API_VERSION, GatewayPolicyManifest, ManifestError
from mas_core.policy.document import CompiledPolicy, compile_policies
from mas_operator.policies import parse_resource


def check(path: Path) -> tuple[list[GatewayPolicyManifest], list[str]]:
    """The valid policies of ``path`` and every problem found, each naming its file."""
    documents, problems = policy_documents(path)
    policies: list[GatewayPolicyManifest] = []
    seen: dict[str, str] = {}
    for source, document in documents:
        try:
            policy = parse_resource(document)
        except ManifestError as exc:
            problems += [f"{source}: {problem}" for problem in exc.problems]
            continue
        key = f"{policy.metadata.namespace}/{policy.metadata.name}"
        if key in seen:
            problems.append(f"{source}: metadata.name: policy {key} is also in {seen[key]}")
            continue
        seen[key] = source
        policies.append(policy)
    if not documents and not problems:
        problems.append(f"{path}: no {API_VERSION} GatewayPolicy manifests")
    return policies, problems


def compiled(policies: list[GatewayPolicyManifest]) -> CompiledPolicy:
    """The one document sidecars enforce."""
    return compile_policies((p.metadata.namespace, p.metadata.name, p.spec) for p in policies)


def run(args: argparse.Namespace) -> int:
    policies, problems = check(args.path)
    for problem in problems:
        print(f"mas: error: {problem}", file=sys.stderr)
    if problems:
        count = len(problems)
        print(f"{count} problem{'s' if count > 1 else ''}; nothing published", file=sys.stderr)
        return USAGE_ERROR
    document = compiled(policies)
    if args.action == "validate":
        for policy in policies:
            print(f"valid: GatewayPolicy {policy.metadata.namespace}/{policy.metadata.name}")
        print(f"{len(policies)} policies, compiled revision {document.revision}")
        return 0
    return _apply(args, document)


def _apply(args: argparse.Namespace, document: CompiledPolicy) -> int:
    try:
        url = redis_url(args)
        if not url:
            return fail(
                "no Redis URL: pass --redis-url or set MAS_REDIS_URL_FILE (or MAS_REDIS_URL)",
                USAGE_ERROR,
            )
        client = redis_clients.client(url)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    try:
        publish_policy(client, document)
    except redis.RedisError as exc:
        return fail(f"cannot publish the policy to {masked_url(url)}: {exc}", RUN_ERROR)
    finally:
        client.close()
    count = len(document.policies)
    print(f"published revision {document.revision} ({count} policies) to {masked_url(url)}")
    return 0

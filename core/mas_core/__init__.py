"""mas_core: what the parts of mas share — the wire formats and the rules, with no I/O policy.

Protocol: the message envelope (:mod:`~mas_core.envelope`), message ids (:mod:`~mas_core.ids`),
every Redis key of the system (:mod:`~mas_core.keys`), agent ids (:mod:`~mas_core.names`), the
sidecar API's error codes (:mod:`~mas_core.error_codes`) and API token
(:mod:`~mas_core.sidecar_token`). Policy: the GatewayPolicy model and compiler
(:mod:`~mas_core.policy`). Identity: tokens and envelope signatures
(:mod:`~mas_core.identity.tokens`), anchors and agents' credentials on disk
(:mod:`~mas_core.identity.credentials`). Redis: the sidecars' ACL rules (:mod:`~mas_core.acl`),
the server-side function library (:mod:`~mas_core.functions`), the registry's entry format
(:mod:`~mas_core.registry_entries`), Sentinel URLs (:mod:`~mas_core.sentinel`) and clients
(:mod:`~mas_core.redis_clients`). Audit: the hash chain, its archive format and signed
checkpoints (:mod:`~mas_core.audit`). Manifests: the Agent and GatewayPolicy models
(:mod:`~mas_core.manifests`). Distribution: the extras and the modules each brings
(:mod:`~mas_core.extras`).

Used by the SDK (:mod:`mas`), the sidecar (:mod:`mas_sidecar`), the control plane
(:mod:`mas_control`), the operator (:mod:`mas_operator`) and the ``mas`` command
(:mod:`mas_cli`); it imports none of them (the layers are checked by import-linter, see
``pyproject.toml``). The SDK imports only its light modules (error codes, API token,
environment flags), so ``from mas import Agent`` loads no Redis, PyNaCl or RE2 package.
"""

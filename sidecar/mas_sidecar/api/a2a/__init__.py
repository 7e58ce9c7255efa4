"""A2A: the listener an exposed agent's sidecar serves A2A clients on, and the outbound calls of
a sidecar to external A2A agents.

Imported only when the agent is exposed (``spec.a2a.expose``): :mod:`.server` (the listener),
:mod:`.protocol` (the JSON-RPC documents, A2A 1.0 and 0.3), :mod:`.clients` (the clients' API
keys), :mod:`.calls` (calls as mas requests through the gateway checks) and :mod:`.tasks`; or on
the first request to an ``ExternalAgent``: :mod:`.remote` (the outbound client) and
:mod:`.outbound` (its documents).
"""

"""The gateway checks: what a message must pass on its way out of this agent and into it.

    gateway       runs the checks in order on send (identity, authorization, rate limit, DLP,
                  circuit breaker, signing, audit) and on receive (sender, authentication,
                  replay, authorization)
    policy_store  the gateway policy in force (loaded, validated, hot-reloaded)
    ratelimit     token buckets per policy limit
    breaker       circuit breakers per target
    dlp/          detectors and the scanner that blocks or redacts what they find
    replay        a signed envelope is accepted from one stream entry only
    credentials   this agent's key, token and trust anchors (hot-reloaded)
    audit_log     the hash-chained audit entries of every decision

The message path calls the gateway only (:mod:`mas_sidecar.streams.outbox` on send, the inbox
and the reply reader on receive); the other modules are what it checks with.

A check that refuses raises :class:`~mas_sidecar.errors.Refusal` (code, reason, when to retry);
only :mod:`mas_sidecar.api` turns it into an HTTP answer. Nothing here imports the API or
aiohttp (pyproject.toml's import-linter contracts).
"""

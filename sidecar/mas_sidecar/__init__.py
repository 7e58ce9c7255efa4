"""The mas sidecar: a localhost HTTP API in front of Redis Streams, one per agent replica.

Laid out along the message path, outermost first; a module imports only from layers below it
(pyproject.toml's import-linter contracts keep it so):

    main        command line, event loop, process lifetime
    api/        the HTTP API: application and server, routes, request and response models,
                documents, error answers, OpenAPI; the only part that speaks HTTP
    components  wires the parts below together, once per process
    recovery    sets the sidecar up on the server, and again after the server lost it
    loops       supervises the background loops
    checks/     the gateway checks on send and receive (gateway, policy_store, ratelimit,
                breaker, dlp/, replay, credentials, audit_log)
    streams/    the Redis Streams bridge and the agent's keys (outbox, writer, inbox, replies,
                dead_letters, state_store, registry); one layer with checks/: each calls the
                other
    config, errors, redis_client, metrics, aio
                settings, the exception tree (with Refusal), the Redis connection, metrics,
                asyncio helpers

A send: ``api/routes/messages`` → ``streams/outbox`` → ``checks/gateway`` (send checks) →
``streams/writer``. A delivery: ``streams/inbox`` → ``checks/gateway`` (receive checks) →
``api/routes/deliveries``.
"""

"""The mas sidecar: a localhost HTTP API in front of Redis Streams, one per agent replica.

Layers, outermost first (a module imports only from layers below it):

    main        command line, event loop, process lifetime
    app         wires components into the aiohttp application (lifespan, routes, middleware)
    routes/*    HTTP handlers: parse, check, write, answer
    http        JSON bodies, error answers, request metrics (middleware)
    checks/     the gateway checks on send and receive (gateway, policy_store, ratelimit,
                breaker, dlp/, replay, credentials, audit_log)
    streams/    the Redis Streams bridge and the agent's keys (outbox, writer, inbox, replies,
                dead_letters, state_store, registry)
    config, errors, metrics, aio
"""

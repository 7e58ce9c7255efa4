"""The mas sidecar: a localhost HTTP API in front of Redis Streams, one per agent replica.

Layers, outermost first (a module imports only from layers below it):

    main        command line, event loop, process lifetime
    app         wires components into the aiohttp application (lifespan, routes, middleware)
    routes/*    HTTP handlers: parse, check, write, answer
    http        JSON bodies, error answers, request metrics (middleware)
    outbox      addresses messages and replies, hands them to the gateway
    gateway     the checks on send (authorize, rate limit, DLP, breaker, sign, audit) and
                receive (authenticate, replay, authorize)
    policy_store, credentials, replay, ratelimit, breaker, dlp/, audit_log
                what the gateway checks with
    inbox, replies, writer, registry, state_store, dead_letters
                the Redis Streams bridge and the agent's keys
    config, errors, metrics, aio
"""

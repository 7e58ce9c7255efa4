"""The mas sidecar: a localhost HTTP API in front of Redis Streams, one per agent replica.

Layers, outermost first (a module imports only from layers below it):

    main        command line, event loop, process lifetime
    api/        the HTTP API: application and server, routes, request models, documents,
                error answers, OpenAPI
    components  wires the parts below together, once per process
    recovery    sets the sidecar up on the server, and again after the server lost it
    loops       supervises the background loops
    checks/     the gateway checks on send and receive (gateway, policy_store, ratelimit,
                breaker, dlp/, replay, credentials, audit_log)
    streams/    the Redis Streams bridge and the agent's keys (outbox, writer, inbox, replies,
                dead_letters, state_store, registry)
    config, errors, metrics, aio
"""

"""The mas sidecar: a localhost HTTP API in front of Redis Streams, one per agent replica.

Layers, outermost first (a module imports only from layers below it):

    main        command line, event loop, process lifetime
    app         wires components into the aiohttp application (lifespan, routes, middleware)
    routes/*    HTTP handlers: parse, check, write, answer
    http        JSON bodies, error answers, request metrics (middleware)
    inbox, outbox, replies, registry, state_store, dead_letters
                the Redis Streams bridge and the agent's keys
    config, errors, metrics
"""

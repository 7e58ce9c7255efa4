"""The sidecar's HTTP API on 127.0.0.1: everything that speaks HTTP, and nothing else does.

    app         builds the aiohttp application: components, routes, middleware, lifespan
    server      serves it, every connection bounded in number and in time
    http        the app's keys, JSON bodies in and out, and the middleware (token, body
                timeout, error answers, request metrics)
    errors      HTTP error mapping: ApiError, and the answer to a check's or the bridge's
                Refusal (status from its code, Retry-After from its wait)
    routes/     the handlers, one module per resource: parse, call the bridge, answer
    models      request bodies (strict pydantic models)
    responses   response bodies (typed dicts the routes build their answers as)
    documents   the JSON documents of messages, deliveries and dead letters
    openapi     the OpenAPI description served on /v1/openapi.json, generated from both

The routes call the Streams bridge (:mod:`mas_sidecar.streams`) and the checks
(:mod:`mas_sidecar.checks`), which never import this package: they raise
:class:`~mas_sidecar.errors.Refusal`, and only this package turns it into HTTP. Used by
:mod:`mas_sidecar.main`.
"""

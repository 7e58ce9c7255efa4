"""The mas web dashboard: agents, who talks to whom, gateway decisions, dead letters, policies.

A small aiohttp server (:mod:`mas_dashboard.server`) over the Redis that the agents' sidecars
use, read with the dashboard's own least-privilege ACL user
(:func:`mas_core.acl.dashboard_acl_rules`):
:mod:`mas_dashboard.reading` is the one module that reads Redis, :mod:`mas_dashboard.views`
turns what it read into the pages' documents (pure), :mod:`mas_dashboard.actions` replays and
deletes dead letters when write actions are on, each audited. The pages are static files of
this package (no CDN, no build step) that follow a server-sent event stream.

Started by ``mas dashboard`` and ``mas up`` (:mod:`mas_cli.dashboard_command`); ``mas status``
prints the agents page as a table from the same builders. Depends on the core and the control
plane's read-only helpers, never on the sidecar or the operator.
"""

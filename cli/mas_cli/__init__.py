"""mas_cli: the ``mas`` command (:mod:`mas_cli.main`) and local mode (:mod:`mas_cli.local`).

``mas up DIR`` runs a folder of manifests on one machine, playing the operator's part with
:mod:`mas_control`; the other subcommands run a sidecar, manage dead letters, identities and
audit trails, and run the Helm chart's Valkey. The top layer: it may use the SDK, the core, the
control plane and the sidecar (which ``mas sidecar`` and ``mas up`` run).
"""

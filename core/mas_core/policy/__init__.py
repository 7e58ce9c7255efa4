"""The compiled gateway policy that each sidecar enforces on outgoing messages; its sections
(data-loss prevention, ...) live in submodules."""

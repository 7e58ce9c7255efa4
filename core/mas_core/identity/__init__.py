"""Who an agent is: Ed25519 keys, identity tokens and envelope signatures
(:mod:`~mas_core.identity.tokens`), and trust anchors and agents' credentials on disk
(:mod:`~mas_core.identity.credentials`)."""

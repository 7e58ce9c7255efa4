"""HTTP handlers, one module per resource; each handler parses, checks, writes, answers."""

"""HTTP handlers, one module per resource; each handler parses, calls the checks and the Streams
bridge, answers. Registered by :mod:`mas_sidecar.api.app`."""

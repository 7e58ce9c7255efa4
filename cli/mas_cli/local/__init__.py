"""Local mode: the whole system on one machine, no Kubernetes (``mas up DIR``)."""

"""``python -m mas_sidecar``: run a sidecar (see :mod:`mas_sidecar.main`)."""

from mas_sidecar.main import main

raise SystemExit(main())

"""``python -m mas``: the ``mas`` command (see :mod:`mas.cli`)."""

from mas.cli import main

raise SystemExit(main())

"""``python -m mas_cli``: the ``mas`` command (see :mod:`mas_cli.main`)."""

from mas_cli.main import main

raise SystemExit(main())

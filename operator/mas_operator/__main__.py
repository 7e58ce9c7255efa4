"""``python -m mas_operator``: the same as ``mas-operator``."""

import sys

from mas_operator.main import main

sys.exit(main())

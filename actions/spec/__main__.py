"""``python -m actions.spec``: see :mod:`actions.spec.cli`."""

import sys

from actions.spec.cli import main

sys.exit(main())

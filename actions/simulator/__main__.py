"""``python -m actions.simulator``: serve the simulator (or ``extract-spec`` to regenerate its spec data)."""

import sys

from actions.simulator.cli import main

sys.exit(main())

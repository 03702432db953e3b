"""``python -m testbed.chaos`` (what scripts/chaos.sh runs)."""

import sys

from testbed.chaos.cli import main

sys.exit(main())

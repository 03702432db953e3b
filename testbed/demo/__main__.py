"""``python -m testbed.demo`` (what scripts/demo.sh runs)."""

import sys

from testbed.demo.cli import main

sys.exit(main())

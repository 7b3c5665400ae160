"""`python -m pager_actors ...`: the same commands as `pager-actors` (run, check-config, demo)."""

import sys

from pager_actors.cli import main

sys.exit(main())

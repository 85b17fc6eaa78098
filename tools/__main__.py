"""`python -m tools`: the `tgsnap` command (tools/cli.py)."""

import sys

from tools.cli import main

sys.exit(main())

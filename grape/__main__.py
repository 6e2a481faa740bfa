"""`python -m grape <stage>`: the same as the `grape` command."""

import sys

from grape.cli import main

sys.exit(main())

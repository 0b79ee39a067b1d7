"""`python -m speclsp` runs the `speclsp` command."""

import sys

from .cli import main

sys.exit(main())

"""`python -m kiln_operator.cli` is the `kiln` command."""

import sys

from kiln_operator.cli import main

sys.exit(main())

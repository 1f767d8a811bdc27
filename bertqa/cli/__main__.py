"""`python -m bertqa.cli ...`: the same as the `bertqa` command."""

import sys

from bertqa.cli.main import main

sys.exit(main())

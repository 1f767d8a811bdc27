"""`python -m bertqa_cli ...`: the same as the `bertqa` command."""

import sys

from bertqa_cli.main import main

sys.exit(main())

"""`python -m tidemark`: the `tidemark` command."""

import sys

from tidemark.processor.cli.main import main

sys.exit(main())

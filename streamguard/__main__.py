"""`python -m streamguard ...`: the `streamguard` command (streamguard.cli), for a launcher
that runs it with a given interpreter (`streamguard up` starts the API this way)."""

import sys

from streamguard.cli import main

sys.exit(main())

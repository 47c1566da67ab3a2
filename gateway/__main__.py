"""`python -m gateway` is the same as the `street-gateway` command."""

import sys

from gateway.cli import main

sys.exit(main())

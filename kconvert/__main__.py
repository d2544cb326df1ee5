"""`python -m kconvert`."""

import sys

from .cli import main

sys.exit(main())

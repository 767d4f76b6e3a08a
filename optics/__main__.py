"""``python -m optics`` runs the ``optics`` command line."""

import sys

from .cli import main

sys.exit(main())

"""``python -m optics`` runs the ``optics`` command line."""

import sys

from optics.cli.main import main

sys.exit(main())

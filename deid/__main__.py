"""``python -m deid`` runs the ``deid`` command line (``torchrun -m deid train-stage2``)."""

import sys

from deid.cli.main import main

sys.exit(main())

"""``python -m geognn`` (and ``torchrun -m geognn train ...``) runs the command line."""

import sys

from geognn.cli import main

sys.exit(main())

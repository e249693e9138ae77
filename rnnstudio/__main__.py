"""``python -m rnnstudio``: the same as the ``rnnstudio`` command."""

import sys

from .cli import main

sys.exit(main())

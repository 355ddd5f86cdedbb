"""``python -m fastcore``: see fastcore.cli."""

import sys

from fastcore.cli import main

sys.exit(main())

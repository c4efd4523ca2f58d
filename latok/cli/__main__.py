"""``python -m latok.cli``: the ``latok`` command."""

import sys

from latok.cli import main

sys.exit(main())

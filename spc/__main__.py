"""``python -m spc``: the ``spc`` command (``spc/cli.py``)."""
import sys

from .cli import main

sys.exit(main())

"""``python -m server [flags]``: the same as ``guard serve [flags]``."""

import sys

from .cli import main

sys.exit(main(["serve", *sys.argv[1:]]))

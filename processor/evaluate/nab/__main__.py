"""Entry point for `python -m processor.evaluate.nab`."""

import sys

from processor.evaluate.nab.cli import main

sys.exit(main())

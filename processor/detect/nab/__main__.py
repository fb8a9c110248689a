"""Entry point for `python -m processor.detect.nab`."""

import sys

from processor.detect.nab.cli import main

sys.exit(main())

"""`python -m training ...` is the same as `dopplergen ...` (handy under `accelerate launch`)."""

import sys

from training.cli import main

sys.exit(main())

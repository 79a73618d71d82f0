"""`python -m training ...` is the same as `dopplergen ...` (handy under `accelerate launch`)."""

import sys

from training.cli import main

if __name__ == "__main__":  # worker processes (evaluate --workers) import this module too
    sys.exit(main())

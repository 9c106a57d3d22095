"""`python -m align ...` (also what `accelerate launch -m align ...` runs)."""

import sys

from align.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m lab …`: the workbook's command line (lab.workbook.cli)."""
import sys

from lab.workbook.cli import main

if __name__ == "__main__":
    sys.exit(main())

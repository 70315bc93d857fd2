"""`python -m fsa.report <folder>`: the same as `fsa-report <folder>`."""

import sys

from fsa.report.command import main

sys.exit(main())

"""`fsa-report`: a run or sweep folder as tables, the paper's figures and one report page.

- `runs`: the runs as their folders say, and the tables (runs, App. C sweep table, trends);
- `layouts`: what goes where in the paper's image figures, as data;
- `figures`: drawing them (PNG and SVG);
- `page`: `report.html`, everything on one self-contained page;
- `command`: the `fsa-report` command.
"""

from fsa.report.command import main

__all__ = ["main"]

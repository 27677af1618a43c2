"""Cohorts: many (MRI, CT/SPECT/PET) pairs listed in a CSV, fused in this process or on a Dask cluster.

:mod:`.rows` reads and checks the cohort file before any work; :mod:`.pair` fuses one row where it
runs (reading and writing the files itself) and writes the output's sidecar (:mod:`.sidecar`), so
that a rerun skips what is up to date; :mod:`.run` runs the rows and writes ``summary.csv``;
:mod:`.cluster` (Dask, imported only for ``--scheduler`` or ``--workers``) spreads them over workers.
``docs/cohorts.md`` is the user's guide.
"""

from .rows import Cohort, CohortRow, RowProblem, read_cohort
from .run import CohortReport, run_cohort

__all__ = ["Cohort", "CohortReport", "CohortRow", "RowProblem", "read_cohort", "run_cohort"]

"""Tables made k-anonymous, l-diverse and t-close: Mondrian and full-domain generalisation.

``anonymize_table`` / ``anonymize_table_file`` are the recipes; ``measure`` is the checker
that judges any released table; ``Lattice``, ``flash`` and ``brute_force`` expose the
full-domain search (for benchmarks and for comparing Flash with the true optimum).
"""

from ._fulldomain import Lattice, NodeResult, brute_force, flash
from ._hierarchy import Hierarchy, auto_intervals, compile_column, load_hierarchies
from ._models import Achieved, PrivacyModel, measure
from ._table import Progress, Report, anonymize_table, anonymize_table_file
from ._utility import Utility, classification_utility

__all__ = [
    "Achieved",
    "Hierarchy",
    "Lattice",
    "NodeResult",
    "PrivacyModel",
    "Progress",
    "Report",
    "Utility",
    "anonymize_table",
    "anonymize_table_file",
    "auto_intervals",
    "brute_force",
    "classification_utility",
    "compile_column",
    "flash",
    "load_hierarchies",
    "measure",
]

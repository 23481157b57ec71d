"""Privacy-utility studies: a grid of paradigms x defences x seeds, trained, audited, ranked.

``leakprobe study --config study.yaml`` (or :func:`run_study`) expands the grid
(:mod:`~leakprobe.study.grid`), runs each cell (train -> audit -> utility) in-process or on
Ray (:mod:`~leakprobe.study.runner`, :mod:`~leakprobe.study.distributed`), caches finished
cells, and writes one report (:mod:`~leakprobe.study.report`).
"""

from leakprobe.study.config import StudyConfig, load_study_config, parse_study_config
from leakprobe.study.grid import Cell, TrainRun, all_cells, expand_grid
from leakprobe.study.runner import plan, run_study

__all__ = ["Cell", "StudyConfig", "TrainRun", "all_cells", "expand_grid", "load_study_config",
           "parse_study_config", "plan", "run_study"]

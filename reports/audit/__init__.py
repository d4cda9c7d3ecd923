"""The audit: scales (:mod:`.scales`), the plan of cells (:mod:`.plan`, :mod:`.cells`), the cell cache
(:mod:`.cache`), executors (:mod:`.executor`), the summary (:mod:`.summary`), the verdicts
(:mod:`.verdicts`), the results document (:mod:`.results`) and the run (:mod:`.run`).
"""

from malleability.reports.audit.plan import Plan, estimate_seconds, plan_cells
from malleability.reports.audit.results import SCHEMA, analyse, load_results
from malleability.reports.audit.run import default_cache_dir, run_audit
from malleability.reports.audit.scales import PUBLIC_SCALES, SCALES, TASKS, Scale, get_scale, scale_help

__all__ = ["PUBLIC_SCALES", "Plan", "SCALES", "SCHEMA", "Scale", "TASKS", "analyse", "default_cache_dir",
           "estimate_seconds", "get_scale", "load_results", "plan_cells", "run_audit", "scale_help"]

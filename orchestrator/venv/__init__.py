"""Modules with dependencies of their own: each runs in a venv built for it, off the supervisor's
loop, cached under `.orchestrator/venvs/` in the project by the hash of what it holds.

`Environments` (the loop's side) plans, queues and watches the builds; `orchestrator.venv.build`
is the builder process; `orchestrator.venv.plan` says which venv a module needs;
`orchestrator.venv.sdk` how `module_sdk` reaches it.
"""

from orchestrator.venv.environments import Environments, Prepared
from orchestrator.venv.plan import CACHE_DIR, READY_MARKER, Plan, PlanError, plan_for

__all__ = ["CACHE_DIR", "READY_MARKER", "Environments", "Plan", "PlanError", "Prepared", "plan_for"]

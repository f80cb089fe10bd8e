"""Pure planning: Clusterfile + observed state -> ordered Actions. No I/O."""

from sealer.plan.actions import ACTION_KINDS, PLAN_API_VERSION, Action, Plan
from sealer.plan.planner import ObservedState, effective_labels, make_plan, plan_clusterfile, plan_delete

__all__ = [
    "ACTION_KINDS",
    "PLAN_API_VERSION",
    "Action",
    "ObservedState",
    "Plan",
    "effective_labels",
    "make_plan",
    "plan_clusterfile",
    "plan_delete",
]

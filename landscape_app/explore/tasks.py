"""The Explore views' compute tasks, by task name (imported by landscape_app.tasks only:
these modules import compute, hence JAX)."""

from __future__ import annotations

from landscape_app.explore import (
    balance_task,
    connect_task,
    honest_task,
    index_map_task,
    lanczos_task,
    race_task,
)

EXPLORE_TASKS = {module.TASK: module.run for module in (
    index_map_task, balance_task, lanczos_task, honest_task, race_task, connect_task)}

"""The "Explore" card: views beyond the slice (issue 8), one module per view.

Each view is an :class:`ExploreView`: a compute task (``<key>_task.py``, run in the compute
process, registered in :mod:`landscape_app.explore.tasks`), its own controls, and a pure
``render(payload, view) -> (figure, label)``. The card shows one view at a time (the
``explore`` setting); a view computes only while it is shown. :mod:`landscape_app.layout`
and :mod:`landscape_app.callbacks` build the panels and wire the callbacks from
:data:`VIEWS`, so adding a view is a new module and one line here.

This package is imported by the web process: the view modules import plotly and numpy,
never :mod:`compute` (JAX); the ``*_task`` modules are imported only by
:mod:`landscape_app.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go

__all__ = ["ExploreView", "VIEWS", "view_by_key"]

# A control: (settings field, label, kind, options, help), as in landscape_app.layout.
Control = tuple[str, str, str, list | None, str | None]


@dataclass(frozen=True)
class ExploreView:
    """One view of the Explore card.

    Attributes:
      key: the ``explore`` setting's value and the id prefix of the view's components
        (``<key>-graph``, ``<key>-status``, ``<key>-progress``, …).
      label: the view's name in the selector.
      task: the compute task's name (``landscape_app.settings.TASK_NAMES``).
      render: ``(payload, view) -> (figure, status label)``; pure (numpy in, figure out).
      intro: one or two sentences under the selector: what to look for.
      controls: the view's own settings controls, shown in its panel.
      work: ``(rows m, parameters P, view) -> multiply-adds``: estimated cost, which routes
        big requests to a background job with a progress bar.
      coarse: ``view -> view'`` of a quick first pass shown while the full one runs
        (coarse-to-fine streaming), or ``None``.
      tables: ``payload -> {name: (header, rows)}`` for the CSV export (arrays go to the
        NPZ export as they are).
      height: the graph's CSS height.
    """

    key: str
    label: str
    task: str
    render: Callable[[Mapping, Mapping], tuple[go.Figure, str]]
    intro: str = ""
    controls: tuple[Control, ...] = ()
    work: Callable[[int, int, Mapping], float] = field(default=lambda m, p, v: float(m * p))
    coarse: Callable[[Mapping], Mapping | None] | None = None
    tables: Callable[[Mapping], dict[str, tuple[list[str], np.ndarray]]] | None = None
    height: str = "440px"


def _views() -> tuple[ExploreView, ...]:
    from landscape_app.explore import balance, connect, honest, index_map, lanczos, race

    return (index_map.VIEW, balance.VIEW, lanczos.VIEW, honest.VIEW, race.VIEW, connect.VIEW)


VIEWS: tuple[ExploreView, ...] = _views()


def view_by_key(key: str | None) -> ExploreView | None:
    """The view whose key is ``key``, or None (``"none"``, unknown)."""
    return next((v for v in VIEWS if v.key == key), None)

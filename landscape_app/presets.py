"""The seven teaching presets, as data: settings overrides plus two or three sentences.

Each :class:`Preset` overrides some fields of ``landscape_app.settings.DEFAULTS`` (the rest
keep their defaults, so a preset is a complete, reproducible view) and may ask for the
many-starts histogram or a second optimiser drawn for comparison. Values follow THEORY.md:
small inits (1e-3 … 1e-6) put a deep linear net next to its origin saddle; the Świrszcz and
jellyfish datasets are exactly those of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PRESETS", "Preset", "preset_settings"]


@dataclass(frozen=True)
class Preset:
    """A one-click view: ``settings`` overrides DEFAULTS; ``explanation`` is 2–3 sentences.

    ``many_starts``: run the many-starts histogram too. ``compare``: the optimiser whose path
    is drawn next to the main one (None: no comparison). ``critical``: run the saddle finder
    from the selected point and mark what it reaches.
    """

    key: str
    title: str
    explanation: str
    settings: dict = field(default_factory=dict)
    many_starts: bool = False
    compare: str | None = None
    critical: bool = False


PRESETS: tuple[Preset, ...] = (
    Preset(
        key="deep_linear",
        title="deep linear: no poor local minima",
        explanation=(
            "A deep linear net with a width-2 bottleneck on a linear teacher: the loss is "
            "non-convex, yet every local minimum is global (Kawaguchi 2016). Every one of the "
            "many random starts ends at the closed-form minimum L* (dashed line), so the "
            "histogram is a single spike."),
        settings={"model": "linear", "widths": [4, 2], "dataset": "linear_teacher",
                  "init": "gaussian", "init_scale": 0.3, "optimizer": "gd", "lr": 0.05,
                  "steps": 2000, "plane": "pca", "center": "final", "n_starts": 64},
        many_starts=True,
    ),
    Preset(
        key="one_hidden_saddle",
        title="one hidden layer: the origin is a strict saddle",
        explanation=(
            "With one hidden layer the origin has zero gradient, but its Hessian has "
            "eigenvalues ±σ_j(C)/m: a strict saddle, with directions of negative curvature. "
            "The path starts 1e-8 from the origin (selected): its spectrum shows the negative "
            "eigenvalues in red, and gradient descent slides off from saddle to saddle."),
        settings={"model": "linear", "widths": [4], "dataset": "linear_teacher",
                  "init": "gaussian", "init_scale": 1e-8, "optimizer": "gd", "lr": 0.05,
                  "steps": 1500, "plane": "pca", "center": "final", "selected_step": 0},
    ),
    Preset(
        key="two_hidden_plateau",
        title="two hidden layers: a bad saddle and a long plateau",
        explanation=(
            "With two hidden layers the Hessian at the origin is exactly zero, yet the origin "
            "is not a minimum: a degenerate ('bad') saddle that no second-order test can see. "
            "Started near it, gradient descent waits on a plateau at the origin's loss (first "
            "shaded band) and then on plateaus at lower saddles (the Baldi–Hornik levels of "
            "the theory panel); the saddle finder, run from the selected step, marks the "
            "critical point it reaches."),
        settings={"model": "linear", "widths": [4, 4], "dataset": "linear_teacher",
                  "init": "gaussian", "init_scale": 0.02, "optimizer": "gd", "lr": 0.05,
                  "steps": 4000, "plane": "pca", "center": "final", "selected_step": 80},
        critical=True,
    ),
    Preset(
        key="depth_plateau",
        title="depth lengthens the plateau",
        explanation=(
            "Near the origin the loss falls only like t^(H+1), so the deeper the net the "
            "slower the escape. From an init of scale 0.05, two hidden layers leave the "
            "origin's plateau within dozens of steps; these four hidden layers need "
            "thousands (shaded), and then pause again at the next saddle."),
        settings={"model": "linear", "widths": [4, 4, 4, 4], "dataset": "linear_teacher",
                  "init": "gaussian", "init_scale": 0.05, "optimizer": "gd", "lr": 0.05,
                  "steps": 5000, "plane": "pca", "center": "final", "selected_step": 1000},
    ),
    Preset(
        key="swirszcz_relu",
        title="ReLU on finite data: a bad local minimum (Świrszcz D1/D2)",
        explanation=(
            "Two ReLU units on the six points of Świrszcz et al.'s D2, which has a non-global "
            "local minimum (loss 8/3 as the paper's plain sum, 2/9 in the ½-mean convention "
            "used here) besides the global minimum at 0. The many-starts histogram shows "
            "where training really ends: some starts reach 0, many stop at higher losses."),
        settings={"model": "mlp", "widths": [2], "activation": "relu", "bias": True,
                  "dataset": "swirszcz_d2", "loss": "squared", "init": "he",
                  "init_scale": 1.0, "optimizer": "adam", "lr": 0.05, "steps": 3000,
                  "plane": "pca", "center": "final", "n_starts": 128},
        many_starts=True,
    ),
    Preset(
        key="jellyfish",
        title="jellyfish: how often training fails",
        explanation=(
            "Four points in the plane that a 2-2-1 ReLU net can fit exactly, yet many random "
            "starts do not (the paper saw only 7% of Adam runs and 16% of GD runs succeed). "
            "The histogram of final losses over 256 starts shows how often training ends in "
            "a poor local minimum here; add hidden units and watch the failures drop."),
        settings={"model": "mlp", "widths": [2], "activation": "relu", "bias": True,
                  "dataset": "jellyfish", "signed_targets": True, "loss": "squared",
                  "init": "he", "init_scale": 1.0, "optimizer": "gd", "lr": 0.05,
                  "steps": 2000, "plane": "pca", "center": "final", "n_starts": 256},
        many_starts=True,
    ),
    Preset(
        key="adam_vs_gd",
        title="Adam vs GD near a saddle",
        explanation=(
            "Both optimisers start 1e-3 from the degenerate saddle at the origin of a "
            "two-hidden-layer linear net, where the gradient is tiny. Adam rescales it per "
            "coordinate and reaches L* within a few hundred steps, while gradient descent "
            "(grey) has not left the saddle after 3,000."),
        settings={"model": "linear", "widths": [4, 4], "dataset": "linear_teacher",
                  "init": "gaussian", "init_scale": 1e-3, "optimizer": "adam", "lr": 0.01,
                  "steps": 3000, "plane": "pca", "center": "final", "selected_step": 0},
        compare="gd",
    ),
)

_BY_KEY = {p.key: p for p in PRESETS}


def preset_settings(key: str, defaults: dict) -> dict:
    """The full raw settings of preset ``key``: ``defaults`` overridden by the preset."""
    preset = _BY_KEY[key]
    merged = {k: (list(v) if isinstance(v, list) else v) for k, v in defaults.items()}
    merged.update({k: (list(v) if isinstance(v, list) else v)
                   for k, v in preset.settings.items()})
    return merged


def get(key: str) -> Preset | None:
    """The preset called ``key``, or None."""
    return _BY_KEY.get(key)

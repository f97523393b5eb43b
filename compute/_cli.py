"""``python -m compute surface|spectrum|path``: the command line (a contract, see README).

This module owns what the three commands share: the data/model/weights options, how they
turn into a :class:`Problem`, and the error handling (bad input → exit code 2 and one line
on stderr, never a traceback). Each command lives in its own ``_cli_<name>.py`` module that
exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compute._errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line with exit code 2."""

    def error(self, message):  # noqa: D102 - argparse hook
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class Problem:
    """Everything a command needs: the model, its parameters, the data and the loss."""

    spec: object        # compute.ModelSpec
    params: tuple       # pytree of the model's parameters
    dataset: object     # compute.Dataset
    loss: str
    dtype: object

    @property
    def X(self):
        import jax.numpy as jnp
        return jnp.asarray(self.dataset.X, dtype=self.dtype)

    @property
    def Y(self):
        import jax.numpy as jnp
        return jnp.asarray(self.dataset.Y, dtype=self.dtype)


def parse_widths(text: str | None) -> tuple[int, ...]:
    """``"16,16"`` → ``(16, 16)``; empty or None → ``()`` (no hidden layer)."""
    if text is None or not text.strip():
        return ()
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise InputError(
            f"--widths must be comma-separated integers like 16,16, got {text!r}.") from None


def add_problem_arguments(parser: argparse.ArgumentParser, *, init: bool = False,
                          default_precision: str = "float32") -> None:
    """The options every command shares: data, model, weights (or init), loss, precision."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", required=True, help="built-in dataset name or a .npz/.csv file")
    g.add_argument("--n-samples", type=int, default=None, help="samples of a synthetic set")
    g.add_argument("--noise", type=float, default=None, help="noise of a synthetic set")
    g.add_argument("--preprocess", default="none", choices=["none", "standardise", "whiten"])
    g.add_argument("--target-columns", default=None, help="CSV: comma-separated Y columns")
    g.add_argument("--signed-targets", action="store_true",
                   help="two-class data as one ±1 column instead of one-hot")
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=True, choices=["linear", "mlp"])
    g.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"])
    g.add_argument("--widths", default="", help="hidden widths, e.g. 16,16 (none: no hidden layer)")
    g.add_argument("--no-bias", action="store_true", help="MLP without biases")
    g.add_argument("--loss", default="squared", choices=["squared", "cross_entropy"])
    g.add_argument("--weights", default=None, help=".npz with W1..WL (and b1..bL)")
    g.add_argument("--seed", type=int, default=0, help="seed of the data and the init")
    g.add_argument("--precision", default=default_precision, choices=["float32", "float64"])
    if init:
        g.add_argument("--init", default="xavier",
                       choices=["gaussian", "xavier", "he", "orthogonal", "zero"])
        g.add_argument("--init-scale", type=float, default=1.0)


def load_weights_file(path: str) -> dict[str, np.ndarray]:
    """Arrays of a weights ``.npz`` (the dataset loader's safe reading; never unpickles)."""
    from compute._datasets import load_npz_file
    from compute._limits import MAX_DEPTH, MAX_PARAMS, MAX_WIDTH

    return load_npz_file(path, what="weights file", example="W1=..., b1=..., W2=...",
                         max_elements=min(MAX_WIDTH**2, MAX_PARAMS), max_total=MAX_PARAMS,
                         max_arrays=2 * (MAX_DEPTH + 1),  # W1..WL and b1..bL
                         why=f"models have at most {MAX_DEPTH} hidden layers of at most "
                             f"{MAX_WIDTH} units and {MAX_PARAMS:,} parameters")


def load_problem(args: argparse.Namespace) -> Problem:
    """Build the :class:`Problem` that the shared options describe."""
    from compute._backend import resolve_dtype
    from compute._datasets import load_dataset
    from compute._losses import check_targets
    from compute._models import init_params, make_model, params_from_arrays, spec_from_arrays

    dtype = resolve_dtype(args.precision)
    targets = args.target_columns.split(",") if args.target_columns else None
    dataset = load_dataset(args.data, seed=args.seed, n_samples=args.n_samples,
                           noise=args.noise, preprocess=args.preprocess,
                           target_columns=targets, one_hot=not args.signed_targets)
    check_targets(args.loss, dataset.Y, args.data)
    d_x, d_y = dataset.X.shape[1], dataset.Y.shape[1]
    if args.weights:
        arrays = load_weights_file(args.weights)
        spec = spec_from_arrays(arrays, kind=args.model, activation=args.activation)
        _check_agrees_with_file(args, spec)
        if spec.layer_sizes[0] != d_x or spec.layer_sizes[-1] != d_y:
            raise InputError(
                f"the weights map {spec.layer_sizes[0]} inputs to {spec.layer_sizes[-1]} "
                f"outputs but the data have d_x={d_x}, d_y={d_y}.")
        params = params_from_arrays(spec, arrays, dtype=dtype)
    else:
        spec = make_model(args.model, d_x, d_y, parse_widths(args.widths),
                          activation=args.activation, bias=not args.no_bias)
        params = init_params(spec, args.seed, method=getattr(args, "init", "xavier"),
                             scale=getattr(args, "init_scale", 1.0), dtype=dtype)
    return Problem(spec, params, dataset, args.loss, dtype)


def check_output(path: str) -> None:
    """InputError unless ``path`` can be written, checked before any computation.

    Creates nothing that outlives the check: missing parent folders are only created when
    the result is written, and a probe file in the nearest existing folder is removed.
    """
    if not path or not path.strip():
        raise InputError("--out must name a file, got an empty path.")
    target = Path(path)
    try:
        if path.endswith(("/", os.sep)) or target.is_dir():
            raise InputError(f"cannot write {path}: it is a folder; name a file in it.")
        folder = target.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise InputError(f"cannot write {path}: {folder} is not a folder.")
        if target.exists():
            if not os.access(target, os.W_OK):
                raise InputError(f"cannot write {path}: permission denied.")
            return
        # Permission bits do not tell (root, read-only or virtual file systems like /proc):
        # try to create a file where the output will go.
        fd, probe = tempfile.mkstemp(prefix=".landscape-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}.") from None


def _check_agrees_with_file(args: argparse.Namespace, spec) -> None:
    """The weights file sets the architecture: --no-bias or --widths that say otherwise are
    refused rather than silently ignored."""
    if args.no_bias and spec.bias:
        raise InputError("--no-bias contradicts the weights file, which holds biases "
                         "b1..bL: drop --no-bias or save the weights without biases.")
    widths = parse_widths(args.widths)  # empty: not given (the file decides)
    hidden = tuple(spec.layer_sizes[1:-1])
    if widths and widths != hidden:
        held = ",".join(map(str, hidden)) or "none"
        raise InputError(f"--widths {args.widths} contradicts the weights file, whose hidden "
                         f"widths are {held}: drop --widths (the file sets them).")


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON (NaN/inf become null), creating parent folders."""
    text = json.dumps(_json_safe(payload), indent=1)
    _write(path, lambda f: f.write(text.encode()))


def write_npz(path: str, **arrays) -> None:
    """``np.savez`` to ``path`` exactly (numpy would append ``.npz`` to other names)."""
    _write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def _write(path: str, fill) -> None:
    """Create parent folders, write with ``fill(file)``; a failed write leaves no file."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            fill(f)
    except OSError as exc:
        if Path(path).is_file():  # truncated or half written: worse than none
            with contextlib.suppress(OSError):
                Path(path).unlink()
        raise InputError(f"cannot write {path}: {exc.strerror or exc}.") from None


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in np.asarray(value, dtype=object).tolist()] \
            if isinstance(value, np.ndarray) else [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def build_parser() -> argparse.ArgumentParser:
    from compute import _cli_path, _cli_spectrum, _cli_surface

    parser = _Parser(prog="python -m compute",
                     description="Loss surfaces, Hessian spectra and gradient paths.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module, text in (
        ("surface", _cli_surface, "loss on a 2-D slice of parameter space → .npz"),
        ("spectrum", _cli_spectrum, "Hessian spectrum and critical-point verdict → .json"),
        ("path", _cli_path, "an optimiser's path with loss, gradient norm, λ_min → .npz"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 1 internal error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_output(args.out)  # fail before the computation, not after it
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"python -m compute {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"python -m compute {args.command}: error: out of memory; use a smaller "
              "grid, model or dataset.", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get("LANDSCAPE_DEBUG"):
            raise
        print(f"python -m compute {args.command}: internal error: {type(exc).__name__}: "
              f"{exc} (set LANDSCAPE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1

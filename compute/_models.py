"""Networks: deep linear nets and MLPs, their parameters and the flat parameter order.

Conventions (THEORY.md): inputs are rows, ``f(X) = σ(… σ(X W_1ᵀ + b_1) …) W_Lᵀ + b_L`` with
``W_k`` of shape ``d_k × d_{k−1}``; a deep linear net has σ = identity and no biases; the
depth ``H = L − 1`` counts hidden layers. Parameters are a tuple of layers, each a dict
``{"W": (d_k, d_{k−1})}`` or ``{"W": ..., "b": (d_k,)}``; the *flat order* is W_1 row-major,
then b_1 (if any), then W_2, b_2, … — :func:`flatten_params` and :func:`unflatten_params`
are the only places that know it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._limits import MAX_DEPTH, MAX_INIT_SCALE, MAX_PARAMS, MAX_SEED, MAX_WIDTH

Params = tuple  # tuple of {"W": array, "b": array} dicts, one per layer


def _leaky_relu(x):
    return jnp.where(x > 0, x, 0.01 * x)


ACTIVATIONS: dict[str, Callable] = {
    # jax.nn.relu has derivative 0 at 0: the convention relu'(0) = 0 of THEORY.md §3.
    "relu": jax.nn.relu,
    "leaky_relu": _leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}
MODEL_KINDS = ("linear", "mlp")
INITIALISERS = ("gaussian", "xavier", "he", "orthogonal", "zero")


@dataclass(frozen=True)
class ModelSpec:
    """The architecture: layer sizes ``(d_x, d_1, …, d_H, d_y)``, activation and biases."""

    layer_sizes: tuple[int, ...]
    activation: str = "identity"
    bias: bool = False

    @property
    def kind(self) -> str:
        return "linear" if self.activation == "identity" and not self.bias else "mlp"

    @property
    def depth(self) -> int:
        """Number of hidden layers H."""
        return len(self.layer_sizes) - 2

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    def layer_shapes(self) -> list[tuple[tuple[int, int], int | None]]:
        """``[((d_k, d_{k−1}), d_k or None), …]``: each layer's W shape and bias length."""
        sizes = self.layer_sizes
        return [((sizes[k + 1], sizes[k]), sizes[k + 1] if self.bias else None)
                for k in range(self.n_layers)]

    @property
    def n_params(self) -> int:
        return sum(r * c + (b or 0) for (r, c), b in self.layer_shapes())

    def param_names(self) -> list[str]:
        """Names of the parameter blocks in flat order: ``W1, b1, W2, …``."""
        names = []
        for k, (_, b) in enumerate(self.layer_shapes(), start=1):
            names.append(f"W{k}")
            if b is not None:
                names.append(f"b{k}")
        return names


def make_model(kind: str, d_x: int, d_y: int, widths=(), *, activation: str = "relu",
               bias: bool = True) -> ModelSpec:
    """Validated :class:`ModelSpec`; ``kind="linear"`` forces identity and no biases."""
    if kind not in MODEL_KINDS:
        raise InputError(f"model must be one of {', '.join(MODEL_KINDS)}, got {kind!r}.")
    if any(isinstance(w, bool) or int(w) != w for w in (d_x, d_y, *widths)):
        raise InputError(f"layer widths must be whole numbers, got {list(widths)}.")
    widths = tuple(int(w) for w in widths)
    if len(widths) > MAX_DEPTH:
        raise InputError(f"at most {MAX_DEPTH} hidden layers are allowed, got {len(widths)}.")
    sizes = (int(d_x), *widths, int(d_y))
    for s in sizes:
        if not 1 <= s <= MAX_WIDTH:
            raise InputError(f"every layer width must be between 1 and {MAX_WIDTH}, got {s}.")
    if kind == "linear":
        spec = ModelSpec(sizes, "identity", False)
    else:
        if activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activation!r}.")
        spec = ModelSpec(sizes, activation, bool(bias))
    if spec.n_params > MAX_PARAMS:
        raise InputError(f"the model has {spec.n_params} parameters; the limit is {MAX_PARAMS}.")
    return spec


def flatten_params(params: Params) -> jax.Array:
    """Parameters to one vector in THEORY.md's flat order (W_1 row-major, b_1, W_2, …)."""
    parts = []
    for layer in params:
        parts.append(jnp.ravel(layer["W"]))
        if "b" in layer:
            parts.append(jnp.ravel(layer["b"]))
    return jnp.concatenate(parts)


def unflatten_params(spec: ModelSpec, theta: jax.Array) -> Params:
    """Inverse of :func:`flatten_params`; ``theta`` has shape ``(n_params,)``."""
    layers, offset = [], 0
    for (rows, cols), b in spec.layer_shapes():
        layer = {"W": theta[offset:offset + rows * cols].reshape(rows, cols)}
        offset += rows * cols
        if b is not None:
            layer["b"] = theta[offset:offset + b]
            offset += b
        layers.append(layer)
    return tuple(layers)


def check_flat_params(spec: ModelSpec, theta, name: str = "the point") -> np.ndarray:
    """``theta`` as a float64 numpy vector of shape ``(n_params,)`` (a copy).

    Raises:
      InputError naming ``name``: not numbers, another shape, or NaN/inf entries.
    """
    n = spec.n_params
    try:
        arr = np.array(theta, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a flat vector of {n} numbers.") from None
    if arr.shape != (n,):
        raise InputError(f"{name} must be a flat vector of {n} parameters (the model's), "
                         f"got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or inf.")
    return arr


def forward(spec: ModelSpec, params: Params, X: jax.Array) -> jax.Array:
    """Network output ``(m, d_y)`` for inputs ``X`` of shape ``(m, d_x)``."""
    act = ACTIVATIONS[spec.activation]
    h = X
    for k, layer in enumerate(params):
        h = h @ layer["W"].T
        if "b" in layer:
            h = h + layer["b"]
        if k < len(params) - 1:
            h = act(h)
    return h


def init_params(spec: ModelSpec, seed: int = 0, *, method: str = "xavier", scale: float = 1.0,
                dtype=jnp.float32) -> Params:
    """Seeded initial parameters.

    Args:
      method: ``gaussian`` (entries ``scale · N(0, 1)``, biases too), ``xavier``
        (``N(0, 2/(fan_in + fan_out))``), ``he`` (``N(0, 2/fan_in)``), ``orthogonal`` (rows
        or columns orthonormal, via QR) or ``zero``; all but ``gaussian`` start biases at 0
        and all are multiplied by ``scale`` (``scale=1e-3`` puts a deep linear net next to
        its origin saddle).
    """
    if method not in INITIALISERS:
        raise InputError(f"init must be one of {', '.join(INITIALISERS)}, got {method!r}.")
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed <= MAX_SEED):
        raise InputError(f"seed must be an integer between 0 and {MAX_SEED}, got {seed!r}.")
    if not (np.isfinite(scale) and 0 <= scale <= MAX_INIT_SCALE):
        raise InputError(f"init scale must be between 0 and {MAX_INIT_SCALE:g}, got {scale!r}.")
    rng = np.random.default_rng(seed)
    layers = []
    for (rows, cols), b in spec.layer_shapes():
        if method == "gaussian":
            W = rng.standard_normal((rows, cols))
        elif method == "xavier":
            W = rng.standard_normal((rows, cols)) * np.sqrt(2.0 / (rows + cols))
        elif method == "he":
            W = rng.standard_normal((rows, cols)) * np.sqrt(2.0 / cols)
        elif method == "orthogonal":
            q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
            q = q * np.sign(np.diag(r))  # Haar-uniform, not biased by QR's sign convention
            W = q if rows >= cols else q.T
        else:
            W = np.zeros((rows, cols))
        layer = {"W": jnp.asarray(scale * W, dtype=dtype)}
        if b is not None:
            bias = rng.standard_normal(b) if method == "gaussian" else np.zeros(b)
            layer["b"] = jnp.asarray(scale * bias, dtype=dtype)
        layers.append(layer)
    return tuple(layers)


def spec_from_arrays(arrays: Mapping[str, np.ndarray], *, kind: str = "linear",
                     activation: str = "relu") -> ModelSpec:
    """The :class:`ModelSpec` implied by weight arrays ``W1..WL`` (and ``b1..bL``)."""
    n = 0
    while f"W{n + 1}" in arrays:
        n += 1
    if n == 0:
        raise InputError("the weights file must hold arrays named W1, W2, … (none found).")
    expected = {f"W{k}" for k in range(1, n + 1)} | {f"b{k}" for k in range(1, n + 1)}
    extra = sorted(set(arrays) - expected)
    if extra:
        raise InputError(f"unexpected arrays {', '.join(extra)} in the weights file: it must "
                         f"hold W1..W{n} (and b1..b{n}) with no gaps.")
    shapes = []
    for k in range(1, n + 1):
        W = np.asarray(arrays[f"W{k}"])
        if not np.issubdtype(W.dtype, np.number) or np.iscomplexobj(W):
            raise InputError(f"W{k} must hold real numbers, got dtype {W.dtype}.")
        if W.ndim != 2:
            raise InputError(f"W{k} must be a 2-D matrix, got shape {W.shape}.")
        shapes.append(W.shape)
    for k in range(1, n):
        if shapes[k][1] != shapes[k - 1][0]:
            raise InputError(f"W{k + 1} has {shapes[k][1]} columns but W{k} has "
                             f"{shapes[k - 1][0]} rows; consecutive layers must chain.")
    has_bias = [f"b{k}" in arrays for k in range(1, n + 1)]
    if any(has_bias) and not all(has_bias):
        raise InputError("give a bias for every layer (b1..bL) or for none.")
    if kind == "linear" and any(has_bias):
        raise InputError("a deep linear net has no biases; use --model mlp for b1..bL.")
    widths = [s[0] for s in shapes[:-1]]
    return make_model(kind, shapes[0][1], shapes[-1][0], widths, activation=activation,
                      bias=all(has_bias))


def params_from_arrays(spec: ModelSpec, arrays: Mapping[str, np.ndarray],
                       dtype=jnp.float32) -> Params:
    """Parameters from named arrays ``W1..WL`` / ``b1..bL``, shapes checked against ``spec``."""
    def real(name, value):
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
            raise InputError(f"{name} must hold real numbers, got dtype {value.dtype}.")
        return value.astype(np.float64)

    layers = []
    for k, ((rows, cols), b) in enumerate(spec.layer_shapes(), start=1):
        W = real(f"W{k}", arrays.get(f"W{k}", np.empty(0)))
        if W.shape != (rows, cols):
            raise InputError(f"W{k} must have shape {(rows, cols)}, got {W.shape}.")
        layer = {"W": W}
        if b is not None:
            if f"b{k}" not in arrays:
                raise InputError(f"the model has biases but b{k} is missing.")
            bias = real(f"b{k}", arrays[f"b{k}"]).reshape(-1)
            if bias.shape != (b,):
                raise InputError(f"b{k} must have length {b}, got shape {bias.shape}.")
            layer["b"] = bias
        for name, value in layer.items():
            if not np.all(np.isfinite(value)):
                raise InputError(f"{name}{k} contains NaN or inf.")
            # Checked before the cast, which would turn them into inf with a RuntimeWarning.
            limit = float(np.finfo(np.dtype(dtype)).max)
            if value.size and np.max(np.abs(value)) > limit:
                raise InputError(f"{name}{k} holds values up to {np.max(np.abs(value)):.3g}, "
                                 f"beyond {np.dtype(dtype).name}'s range (±{limit:.3g}): use "
                                 "float64 precision or smaller weights.")
        layers.append({key: jnp.asarray(v, dtype=dtype) for key, v in layer.items()})
    return tuple(layers)


def params_to_arrays(params: Params) -> dict[str, np.ndarray]:
    """``{"W1": …, "b1": …}`` numpy arrays, as stored in weight ``.npz`` files."""
    out = {}
    for k, layer in enumerate(params, start=1):
        for name, value in layer.items():
            out[f"{name}{k}"] = np.asarray(value)
    return out

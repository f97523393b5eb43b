"""Independent numpy references shared by the tests: a forward pass and losses written
from THEORY.md's conventions (rows are samples; flat order W1 row-major, b1, W2, …), with no
JAX and nothing from compute/."""

from __future__ import annotations

import numpy as np

ACTIVATIONS = {"identity": lambda z: z, "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}


def np_layers(theta, sizes, bias=False):
    """``[(W_k, b_k or None), …]`` from a flat vector in THEORY.md's order."""
    layers, off = [], 0
    for k in range(len(sizes) - 1):
        rows, cols = sizes[k + 1], sizes[k]
        W = theta[off:off + rows * cols].reshape(rows, cols)
        off += rows * cols
        b = None
        if bias:
            b = theta[off:off + rows]
            off += rows
        layers.append((W, b))
    assert off == theta.size, "flat vector length does not match the layer sizes"
    return layers


def np_forward(theta, sizes, X, *, act="identity", bias=False):
    """Network outputs (m, d_y); ``act`` is a name of ACTIVATIONS or a numpy function."""
    fn = act if callable(act) else ACTIVATIONS[act]
    h = X
    layers = np_layers(np.asarray(theta, np.float64), sizes, bias)
    for k, (W, b) in enumerate(layers):
        h = h @ W.T + (0 if b is None else b)
        if k < len(layers) - 1:
            h = fn(h)
    return h


def np_squared_loss(theta, sizes, X, Y, *, act="identity", bias=False):
    """(1/2m) Σ_i ‖f(x_i) − y_i‖²."""
    R = np_forward(theta, sizes, X, act=act, bias=bias) - Y
    return 0.5 * np.sum(R * R) / X.shape[0]


def fd_hessian(fn, theta, h=1e-4):
    """Central second differences of a scalar numpy function (symmetric):
    H_ij ≈ [f(θ+hE_i+hE_j) − f(θ+hE_i−hE_j) − f(θ−hE_i+hE_j) + f(θ−hE_i−hE_j)] / 4h²."""
    theta = np.asarray(theta, np.float64)
    n = theta.size
    E = np.eye(n) * h
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            H[i, j] = H[j, i] = (fn(theta + E[i] + E[j]) - fn(theta + E[i] - E[j])
                                 - fn(theta - E[i] + E[j]) + fn(theta - E[i] - E[j])) / (4 * h * h)
    return H


def path_step_rows(settings, rows, d_x, d_y):
    """Rows a path step touches (THEORY.md §1: a deep linear net's squared loss depends on
    the data only through [X Y]ᵀ[X Y], rank ≤ d_x + d_y): a full-batch path of such a net
    needs d_x + d_y rows; minibatch paths (a batch size, or sgd) record all m every step."""
    full_batch = settings["batch"] is None and settings["optimizer"] != "sgd"
    if full_batch and settings["model"] == "linear" and settings["loss"] == "squared":
        return min(rows, d_x + d_y)
    return rows

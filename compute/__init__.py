"""Landscape's numerical library: models, data, loss surfaces, curvature and paths (JAX).

Pure functions over arrays and pytrees; no Dash or Flask. The public API is re-exported
here from private modules, one concern each. Importing the package enables float64 in JAX
and its persistent compilation cache (see :mod:`compute._backend`): the only global state.
"""

from compute._backend import cache_dir, configure_jax, device_info, resolve_dtype

configure_jax()

from compute._errors import InputError  # noqa: E402
from compute._losses import (  # noqa: E402
    LOSSES, cross_entropy_loss, flat_objective, loss_function, model_loss, squared_loss,
    sufficient_data)
from compute._models import (  # noqa: E402
    ACTIVATIONS, INITIALISERS, MODEL_KINDS, ModelSpec, check_flat_params, flatten_params,
    forward, init_params, make_model, params_from_arrays, params_to_arrays, spec_from_arrays,
    unflatten_params)
from compute import _limits as limits  # noqa: E402
from compute._lanczos import *  # noqa: E402,F401,F403
from compute._hessian import *  # noqa: E402,F401,F403
from compute._theory import *  # noqa: E402,F401,F403
from compute._critical import *  # noqa: E402,F401,F403
from compute._saddle import *  # noqa: E402,F401,F403
from compute._sharding import *  # noqa: E402,F401,F403
from compute._optimisers import *  # noqa: E402,F401,F403
from compute._paths import *  # noqa: E402,F401,F403
from compute._plateaus import *  # noqa: E402,F401,F403
from compute._projection import *  # noqa: E402,F401,F403
from compute._saxe import *  # noqa: E402,F401,F403
from compute._planes import *  # noqa: E402,F401,F403
from compute._surface import *  # noqa: E402,F401,F403
from compute._index_map import *  # noqa: E402,F401,F403
from compute._conservation import *  # noqa: E402,F401,F403
from compute._lanczos_diagnostics import *  # noqa: E402,F401,F403
from compute._honest import *  # noqa: E402,F401,F403
from compute._race import *  # noqa: E402,F401,F403
from compute._connect import *  # noqa: E402,F401,F403

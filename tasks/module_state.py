"""Saving a Flax NNX module's state to an orbax folder and restoring it into a module.

World models and policies are saved the same way: the module's state as a plain nested
dict of arrays, restored into a freshly built module of the same structure.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from tasks.errors import InputError


def save_module_state(path: str | Path, module: nnx.Module) -> None:
    """Write ``module``'s state to the orbax folder ``path``, replacing an older one.

    In a JAX job of several processes the calling process writes alone (the one that
    writes its run's files), with its own copy of the state.
    """
    state = nnx.to_pure_dict(nnx.state(module))
    if jax.process_count() > 1:  # orbax takes no jax.Array from one process alone; numpy it does
        state = jax.tree.map(np.asarray, state)
    checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
    checkpointer.save(Path(path).absolute(), state, force=True)
    checkpointer.wait_until_finished()


def restore_module_state(path: str | Path, module: nnx.Module, shown: str | Path, what: str) -> None:
    """Load the state saved at ``path`` into ``module`` (built with the same structure).

    Raises:
        InputError: naming ``shown``, if the checkpoint cannot be read.
    """
    state = nnx.state(module)
    target = nnx.to_pure_dict(state)
    if jax.process_count() > 1:  # each process reads alone, into its own copy (as `save_module_state`)
        target = jax.tree.map(np.asarray, target)
    try:
        checkpointer = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
        restored = checkpointer.restore(Path(path).absolute(), target)
    except Exception as error:
        # Orbax and TensorStore explain in pages; the first line says what failed.
        first_line = (str(error).strip().splitlines() or [""])[0].split(" See full")[0][:160]
        raise InputError(shown, f"the {what} checkpoint is damaged or unreadable ({type(error).__name__}: {first_line})") from None
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, restored))
    nnx.update(module, state)


def _this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for a process that reads or writes without the others of its job
    (who would otherwise be waited for at orbax's barriers)."""
    this = ocp.multihost.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=this, active_processes={this})

"""Saving a Flax NNX module's state to an orbax folder and restoring it into a module.

World models and policies are saved the same way: the module's state as a plain nested
dict of arrays, restored into a freshly built module of the same structure.
"""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

from tasks.errors import InputError


def save_module_state(path: str | Path, module: nnx.Module) -> None:
    """Write ``module``'s state to the orbax folder ``path``, replacing an older one."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).absolute(), nnx.to_pure_dict(nnx.state(module)), force=True)
    checkpointer.wait_until_finished()


def restore_module_state(path: str | Path, module: nnx.Module, shown: str | Path, what: str) -> None:
    """Load the state saved at ``path`` into ``module`` (built with the same structure).

    Raises:
        InputError: naming ``shown``, if the checkpoint cannot be read.
    """
    state = nnx.state(module)
    try:
        restored = ocp.StandardCheckpointer().restore(Path(path).absolute(), nnx.to_pure_dict(state))
    except Exception as error:
        # Orbax and TensorStore explain in pages; the first line says what failed.
        first_line = (str(error).strip().splitlines() or [""])[0].split(" See full")[0][:160]
        raise InputError(shown, f"the {what} checkpoint is damaged or unreadable ({type(error).__name__}: {first_line})") from None
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(module, state)

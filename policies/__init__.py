"""Actors, critics, behaviour policies and real-trained baselines.

`load_policy` is the controller side's entry point: a saved policy as a numpy callable
that needs none of the rest of this project (`policies.deployment`).
"""

from policies.deployment import load_policy

__all__ = ["load_policy"]

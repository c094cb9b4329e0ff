"""Learned models of the real side: the world-model interface and its implementations.

Importing the package registers the gymnasium environment ``dreamer/Dream-v0``.
"""

from worldmodel.registration import register_environments

register_environments()

"""Learned models of the real side: the world-model interface and its implementations."""

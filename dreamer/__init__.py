"""Imagination rollouts, training in dreams, the online loop, and the command line."""

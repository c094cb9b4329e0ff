"""Actors, critics, behaviour policies and real-trained baselines."""

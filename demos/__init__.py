"""Command-line jobs of ibc-gym: collect, train, evaluate, record videos, benchmark, visualize.

This is the top layer: it imports ``envs``, ``agents`` and ``ebm_policy``; nothing imports it.
"""

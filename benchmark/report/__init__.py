"""Reports: the leaderboard (load, aggregate, Pareto front, render) and the plots.

This layer reads records; it never runs trials.
"""

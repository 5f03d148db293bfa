"""search: agents, Pareto frontiers, reports and the ``kdsearch`` command line."""

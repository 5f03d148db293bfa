"""search: agents, Pareto frontiers, reports and the ``distilsearch`` command line."""

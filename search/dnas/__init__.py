"""AdaBERT-style differentiable architecture search: a masked super-student (:mod:`search.dnas.supernet`), its
search loop (:mod:`search.dnas.train`), a beta sweep on Ray Tune (:mod:`search.dnas.tune`) and the ``dnas`` agent
(:mod:`distilsearch.search.dnas.agent`).

Importing this package registers the ``dnas`` agent with :func:`~distilsearch.search.agents.base.register_agent`; the
agent module (and Ray Tune) load on first use.
"""

from typing import Any

from distilsearch.search.agents.base import Agent, register_agent


def _dnas(**options: Any) -> Agent:
    from distilsearch.search.dnas.agent import DNASAgent

    return DNASAgent(**options)


register_agent("dnas", _dnas)

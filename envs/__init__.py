"""envs: the StudentSearch Gymnasium environments, evaluators and the evaluation store.

Importing the package registers the environments of :data:`ENV_IDS` with Gymnasium, so
``gymnasium.make("distilsearch/StudentSearch-v0")`` works after ``import distilsearch.envs`` (or, without the import,
``gymnasium.make("distilsearch.envs:distilsearch/StudentSearch-v0")``). With no argument an environment searches
KD-Bench's shipped table; ``evaluator=``, ``space=``, ``reward=``, ``table=`` etc. are described in
:mod:`envs.student_search`. The vector-reward ids (``...MO-v0``) are registered without Gymnasium's passive checker,
which warns on every non-scalar reward.
"""

import gymnasium

ENV_IDS = {
    "distilsearch/StudentSearch-v0": "distilsearch.envs.student_search:StudentSearchEnv",
    "distilsearch/StudentSearchOneShot-v0": "distilsearch.envs.student_search:StudentSearchOneShotEnv",
    "distilsearch/StudentSearchMO-v0": "distilsearch.envs.student_search:StudentSearchMOEnv",
    "distilsearch/StudentSearchOneShotMO-v0": "distilsearch.envs.student_search:StudentSearchOneShotMOEnv",
}
VECTOR_REWARD_IDS = frozenset({"distilsearch/StudentSearchMO-v0", "distilsearch/StudentSearchOneShotMO-v0"})

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point, disable_env_checker=_env_id in VECTOR_REWARD_IDS)

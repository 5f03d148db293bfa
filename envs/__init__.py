"""envs: the StudentSearch Gymnasium environments, evaluators and the evaluation store.

Importing the package registers ``distilsearch/StudentSearch-v0`` and ``distilsearch/StudentSearchOneShot-v0`` with
Gymnasium, so ``gymnasium.make("distilsearch/StudentSearch-v0", evaluator=..., space=..., reward=...)`` works after
``import distilsearch.envs`` (or, without the import,
``gymnasium.make("distilsearch.envs:distilsearch/StudentSearch-v0", ...)``).
"""

import gymnasium

ENV_IDS = {
    "distilsearch/StudentSearch-v0": "distilsearch.envs.student_search:StudentSearchEnv",
    "distilsearch/StudentSearchOneShot-v0": "distilsearch.envs.student_search:StudentSearchOneShotEnv",
}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point)

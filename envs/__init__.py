"""envs: the StudentSearch Gymnasium environments, evaluators and the evaluation store.

Importing the package registers ``kdsearch/StudentSearch-v0`` and ``kdsearch/StudentSearchOneShot-v0`` with
Gymnasium, so ``gymnasium.make("kdsearch/StudentSearch-v0", evaluator=..., space=..., reward=...)`` works after
``import envs`` (or, without the import, ``gymnasium.make("envs:kdsearch/StudentSearch-v0", ...)``).
"""

import gymnasium

ENV_IDS = {
    "kdsearch/StudentSearch-v0": "envs.student_search:StudentSearchEnv",
    "kdsearch/StudentSearchOneShot-v0": "envs.student_search:StudentSearchOneShotEnv",
}

for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point)

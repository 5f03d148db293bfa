"""envs: the StudentSearch Gymnasium environments, evaluators and the evaluation store."""

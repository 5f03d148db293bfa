"""kdlib: the distillation library (assets, tasks, teacher, students, losses, measurement, export).

kdlib never imports from ``envs`` or ``search``.
"""

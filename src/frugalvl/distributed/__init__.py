"""Scale-out on Ray (docs/ray.md): ``segment`` and CoIDO's per-sample stages as Ray Data pipelines.

Nothing here is imported unless ``--engine ray`` is given, and Ray itself is imported only inside
functions, so ``frugalvl`` works without the ``[ray]`` extra.
"""

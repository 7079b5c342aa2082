"""privagg: the model-agnostic facade above :mod:`dp` and :mod:`protocols`.

Subpackages: :mod:`privagg.flower` (distributed DP + SecAgg(+) as a Flower mod and
workflow; needs ``pip install 'privagg[flower]'``).
"""

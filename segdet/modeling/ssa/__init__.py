"""SSA: the semantic-and-spatial adaptive classifier and its online GT-guided distillation.
Importing registers the SSA heads (``CGRSegSSAHead``, ``SemSegFPNSSAHead``) in
SEM_SEG_HEADS_REGISTRY.

  classifier.py  SSAClassifier (student and GT-guided teacher prototypes)
  heads.py       SSA heads: a base decoder + coarse classifier + SSAClassifier + criterion
  criterion.py   SSACriterion, the weighted loss terms of a head (built from MODEL.SSA)
  losses.py      the eight SSA loss terms
  boundary.py    the boundary mask of the response distillation
"""
from . import classifier  # noqa: F401
from . import criterion  # noqa: F401
from . import heads  # noqa: F401

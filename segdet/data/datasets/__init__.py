"""Dataset registration: importing this package registers every dataset segdet knows."""
from . import samples  # noqa: F401  (segdet_trees_*, segdet_*_sem_seg_*: embedded sample data)
from . import ade20k  # noqa: F401  (ade20k_150_sem_seg_{train,val}, official layout)

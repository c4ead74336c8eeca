"""Dataset registration: importing this package registers every dataset segdet knows."""
from . import samples  # noqa: F401  (segdet_trees_*, segdet_*_sem_seg_*: embedded sample data)
from . import ade20k  # noqa: F401  (ade20k_150_sem_seg_{train,val}, official layout)
from . import coco_stuff  # noqa: F401  (coco_stuff_164k_sem_seg_{train,val}, raw stuffthingmaps)
from . import pascal_context  # noqa: F401  (pascal_context_59_sem_seg_{train,val}, mmseg layout)

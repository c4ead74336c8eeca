"""Dataset registration (COCO, ADE20K, embedded samples) and dataset mappers."""

"""An image folder paired with a label-map folder by file stem: the layout of ADE20K and of the
``sem_seg_folder`` datasets declared in a config."""
import os
from typing import Dict, List, Sequence

__all__ = ["IMAGE_EXTENSIONS", "list_stems", "pair_images_with_labels"]

#: the image files segdet reads from a folder (any case)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def list_stems(folder: str, exts: Sequence[str]) -> Dict[str, str]:
    """``{stem: file name}`` of the files of ``folder`` ending in one of ``exts`` (any case)."""
    exts = tuple(e.lower() for e in exts)
    return {os.path.splitext(f)[0]: f for f in sorted(os.listdir(folder)) if f.lower().endswith(exts)}


def pair_images_with_labels(image_dir: str, label_dir: str, image_exts: Sequence[str], label_ext: str,
                            what: str) -> List[Dict]:
    """Dataset dicts ``{"file_name", "sem_seg_file_name", "image_id"}`` (``image_id`` = the stem),
    sorted by stem: every image of ``image_dir`` with ``label_dir/<stem><label_ext>``.

    Raises:
        FileNotFoundError: no image in ``image_dir``, or images without a label (names the count
            and the first missing label file); ``what`` (e.g. ``"ADE20K"``) starts the message.
    """
    images = list_stems(image_dir, image_exts)
    if not images:
        raise FileNotFoundError(f"{what}: no images ({', '.join(image_exts)}) in {image_dir}")
    labels = list_stems(label_dir, (label_ext,))
    missing = [s for s in sorted(images) if s not in labels]
    if missing:
        raise FileNotFoundError(
            f"{what}: {len(missing)} images in {image_dir} have no label in {label_dir}, e.g. "
            f"{os.path.join(label_dir, missing[0] + label_ext)}")
    return [{"file_name": os.path.join(image_dir, images[s]),
             "sem_seg_file_name": os.path.join(label_dir, labels[s]), "image_id": s}
            for s in sorted(images)]

"""mmseg-style training augmentations as detectron2 ``Augmentation`` / ``Transform`` classes.

* :class:`ResizeByRatio`: keep-ratio resize into ``scale * r`` with ``r ~ U[ratio_range]``
  (mmseg ``Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)``); OpenCV
  bilinear for images, nearest for labels.
* :class:`RandomCropCatMax`: random crop retried while one class covers too much of it
  (mmseg ``RandomCrop(cat_max_ratio=0.75)``); needs the label (``AugInput(image, sem_seg=...)``).
* :class:`PhotometricDistortion`: mmseg ``PhotoMetricDistortion`` on the image only.
* Flip: detectron2's ``RandomFlip``.

All randomness comes from ``np.random``: seeding it makes every augmentation deterministic.
Images are (H, W, C) uint8 (or float in [0, 255]); labels (H, W) integer maps.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from detectron2.data.transforms import Augmentation, CropTransform, RandomCrop, Transform

__all__ = [
    "keep_ratio_size",
    "Cv2ResizeTransform",
    "ResizeByRatio",
    "max_class_ratio",
    "RandomCropCatMax",
    "PhotometricParams",
    "PhotometricTransform",
    "PhotometricDistortion",
]


def keep_ratio_size(height: int, width: int, scale: Sequence[int]) -> Tuple[int, int]:
    """Output (new_h, new_w) of a keep-ratio resize of an ``height × width`` image into
    ``scale = (long, short)`` (order-free: the larger value bounds the long side, the smaller
    the short side): ``f = min(long / max(h, w), short / min(h, w))``, sizes rounded half up
    (mmcv ``rescale_size``)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    long_edge, short_edge = max(scale), min(scale)
    if short_edge <= 0:
        raise ValueError(f"resize scale must be positive, got {tuple(scale)}")
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class Cv2ResizeTransform(Transform):
    """Resize ``h × w`` -> ``new_h × new_w`` with OpenCV: bilinear for images (dtype kept),
    nearest for segmentation maps (mmcv ``imresize`` semantics)."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._resize(img, cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._resize(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).copy()
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def _resize(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        if array.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"Cv2ResizeTransform built for {self.h}x{self.w} inputs got an array of shape "
                f"{array.shape}"
            )
        if (self.new_h, self.new_w) == (self.h, self.w):
            return array
        dtype = array.dtype
        if dtype == np.bool_ or dtype == np.int8 or dtype == np.uint32:
            array = array.astype(np.int32)
        out = cv2.resize(array, (self.new_w, self.new_h), interpolation=interpolation)
        if array.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
            out = out[:, :, None]
        return out.astype(dtype, copy=False)

    def inverse(self) -> Transform:
        return Cv2ResizeTransform(self.new_h, self.new_w, self.h, self.w)


class ResizeByRatio(Augmentation):
    """Keep-ratio resize into ``(int(long * r), int(short * r))``, ``r ~ U[ratio_range]``.

    For an ``h × w`` input the output size is :func:`keep_ratio_size` of that target, i.e.
    ``f = min(int(long*r) / max(h, w), int(short*r) / min(h, w))`` (mmseg truncates the scaled
    target to integers before the keep-ratio rescale). ``ratio_range=None`` uses ``r = 1``
    (the test-time resize).
    """

    def __init__(self, scale: Sequence[int] = (2048, 512),
                 ratio_range: Optional[Sequence[float]] = (0.5, 2.0)):
        super().__init__()
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"INPUT.SEM_SEG.RESIZE_SCALE must be (long, short) > 0, got {tuple(scale)}")
        if ratio_range is not None:
            if len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]:
                raise ValueError(
                    f"INPUT.SEM_SEG.RESIZE_RATIO_RANGE must be (low, high) with 0 < low <= high, got "
                    f"{tuple(ratio_range)}"
                )
            ratio_range = tuple(float(r) for r in ratio_range)
        self.scale = tuple(int(s) for s in scale)
        self.ratio_range = ratio_range

    def output_size(self, height: int, width: int, ratio: float) -> Tuple[int, int]:
        """(new_h, new_w) for an ``height × width`` image at ratio ``ratio``."""
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return keep_ratio_size(height, width, target)

    def get_transform(self, image: np.ndarray) -> Transform:
        ratio = 1.0
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = np.random.random_sample() * (high - low) + low
        h, w = image.shape[:2]
        new_h, new_w = self.output_size(h, w, ratio)
        return Cv2ResizeTransform(h, w, new_h, new_w)


def max_class_ratio(sem_seg: np.ndarray, ignore_label: int) -> float:
    """Largest fraction of the non-ignored pixels of ``sem_seg`` taken by one class; 1.0 when
    fewer than two classes are present (such a crop never passes the cat-max check)."""
    values = sem_seg.ravel()
    values = values[values != ignore_label]
    if values.size == 0:
        return 1.0
    if values.min() < 0:
        raise ValueError(f"label values must be >= 0 (or the ignore label), got {values.min()}")
    counts = np.bincount(values.astype(np.int64))
    counts = counts[counts > 0]
    if counts.size < 2:
        return 1.0
    return float(counts.max() / counts.sum())


class RandomCropCatMax(Augmentation):
    """Random ``crop_size = (h, w)`` crop (clipped to the image) whose largest class covers
    less than ``cat_max_ratio`` of its non-ignored pixels, found in up to ``max_tries``
    uniformly drawn windows (mmseg ``RandomCrop``: the accepted crop holds at least two classes;
    detectron2's ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``). ``crop_type`` is one of detectron2's
    ``INPUT.CROP.TYPE`` values; with any but ``"absolute"`` the window size comes from
    ``T.RandomCrop(crop_type, crop_size).get_crop_size``.

    If no drawn window passes, the one with the smallest largest-class ratio is used (mmseg
    instead takes an 11th, never checked, window). ``cat_max_ratio >= 1`` disables the check.
    Call it on ``AugInput(image, sem_seg=label)``.
    """

    def __init__(self, crop_size: Sequence[float], cat_max_ratio: float = 0.75,
                 ignore_label: int = 255, max_tries: int = 10, crop_type: str = "absolute"):
        super().__init__()
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"INPUT.CROP.SIZE must be (h, w) > 0, got {tuple(crop_size)}")
        if not 0 < cat_max_ratio:
            raise ValueError(f"INPUT.CROP.SINGLE_CATEGORY_MAX_AREA must be > 0, got {cat_max_ratio}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.crop_type = crop_type
        if crop_type == "absolute":
            self.crop_size = (int(crop_size[0]), int(crop_size[1]))
            self._sizer = None
        else:
            self.crop_size = tuple(crop_size)
            self._sizer = RandomCrop(crop_type, self.crop_size)
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_label = int(ignore_label)
        self.max_tries = int(max_tries)

    def _random_window(self, h: int, w: int) -> Tuple[int, int, int, int]:
        if self._sizer is None:
            ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        else:
            ch, cw = self._sizer.get_crop_size((h, w))
        y0 = np.random.randint(0, h - ch + 1)
        x0 = np.random.randint(0, w - cw + 1)
        return y0, x0, ch, cw

    def get_transform(self, image: np.ndarray, sem_seg: Optional[np.ndarray]) -> Transform:
        h, w = image.shape[:2]
        if self.cat_max_ratio >= 1.0:
            y0, x0, ch, cw = self._random_window(h, w)
            return CropTransform(x0, y0, cw, ch)
        if sem_seg is None:
            raise ValueError(
                "RandomCropCatMax with cat_max_ratio < 1 needs the label: call it on "
                "AugInput(image, sem_seg=label)"
            )
        if sem_seg.shape[:2] != (h, w):
            raise ValueError(f"label shape {sem_seg.shape} does not match image shape {image.shape}")
        best, best_ratio = None, float("inf")
        for _ in range(self.max_tries):
            y0, x0, ch, cw = self._random_window(h, w)
            ratio = max_class_ratio(sem_seg[y0:y0 + ch, x0:x0 + cw], self.ignore_label)
            if ratio < self.cat_max_ratio:
                best = (y0, x0, ch, cw)
                break
            if ratio < best_ratio:
                best, best_ratio = (y0, x0, ch, cw), ratio
        y0, x0, ch, cw = best
        return CropTransform(x0, y0, cw, ch)


@dataclass(frozen=True)
class PhotometricParams:
    """One draw of :class:`PhotometricDistortion`; None = that step is skipped."""

    brightness_delta: Optional[float] = None  # added to every channel
    contrast_alpha: Optional[float] = None  # multiplies every channel
    contrast_first: bool = False  # contrast right after brightness (else after hue)
    saturation_alpha: Optional[float] = None  # multiplies S of HSV
    hue_delta: Optional[int] = None  # added to H of HSV, in OpenCV uint8 units (degrees / 2)


class PhotometricTransform(Transform):
    """Applies :class:`PhotometricParams` to an (H, W, C) image in ``image_format``.

    uint8 images follow mmseg exactly: each step computes in float32, clips to [0, 255] and
    truncates back to uint8; saturation and hue each go through an HSV round trip. Float images
    (values in [0, 255]) are clipped but not truncated. Saturation and hue need 3 channels and
    are skipped otherwise. Labels and coordinates are unchanged.
    """

    def __init__(self, params: PhotometricParams, image_format: str = "RGB"):
        super().__init__()
        if image_format not in ("RGB", "BGR", "L", "YUV-BT.601"):
            raise ValueError(f"unsupported image format {image_format!r} for PhotometricTransform")
        self.params = params
        self.image_format = image_format

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
            raise ValueError(f"PhotometricTransform expects a uint8 or float image, got {img.dtype}")
        p = self.params
        out = img
        if p.brightness_delta is not None:
            out = self._affine(out, 1.0, p.brightness_delta)
        if p.contrast_first and p.contrast_alpha is not None:
            out = self._affine(out, p.contrast_alpha, 0.0)
        color = out.ndim == 3 and out.shape[2] == 3 and self.image_format in ("RGB", "BGR")
        if color and p.saturation_alpha is not None:
            out = self._saturation(out, p.saturation_alpha)
        if color and p.hue_delta is not None:
            out = self._hue(out, p.hue_delta)
        if not p.contrast_first and p.contrast_alpha is not None:
            out = self._affine(out, p.contrast_alpha, 0.0)
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    @staticmethod
    def _affine(img: np.ndarray, alpha: float, beta: float) -> np.ndarray:
        out = np.clip(img.astype(np.float32) * alpha + beta, 0, 255)
        return out.astype(img.dtype)  # uint8: truncation, as mmseg

    def _to_hsv(self, img: np.ndarray) -> np.ndarray:
        code = cv2.COLOR_RGB2HSV if self.image_format == "RGB" else cv2.COLOR_BGR2HSV
        if img.dtype == np.uint8:
            return cv2.cvtColor(img, code)  # H in [0, 180), S, V in [0, 255]
        return cv2.cvtColor(img.astype(np.float32) / 255.0, code)  # H in [0, 360), S, V in [0, 1]

    def _from_hsv(self, hsv: np.ndarray, dtype) -> np.ndarray:
        code = cv2.COLOR_HSV2RGB if self.image_format == "RGB" else cv2.COLOR_HSV2BGR
        if dtype == np.uint8:
            return cv2.cvtColor(hsv, code)
        return (cv2.cvtColor(hsv, code) * 255.0).astype(dtype)

    def _saturation(self, img: np.ndarray, alpha: float) -> np.ndarray:
        hsv = self._to_hsv(img)
        if img.dtype == np.uint8:
            hsv[:, :, 1] = self._affine(hsv[:, :, 1], alpha, 0.0)
        else:
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * alpha, 0.0, 1.0)
        return self._from_hsv(hsv, img.dtype)

    def _hue(self, img: np.ndarray, delta: int) -> np.ndarray:
        hsv = self._to_hsv(img)
        if img.dtype == np.uint8:
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + delta) % 180
        else:
            hsv[:, :, 0] = np.mod(hsv[:, :, 0] + 2.0 * delta, 360.0)
        return self._from_hsv(hsv, img.dtype)


class PhotometricDistortion(Augmentation):
    """mmseg ``PhotoMetricDistortion``: brightness (+U[-32, 32]), then contrast (×U[0.5, 1.5])
    either right away or last, with saturation (×U[0.5, 1.5]) and hue (+U{-18..18} in OpenCV
    units) in between; each step is applied with probability 1/2, and the contrast position is
    a fair coin. The hue shift is symmetric (mmseg draws from [-18, 17])."""

    def __init__(self, brightness_delta: float = 32.0, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta: int = 18, image_format: str = "RGB"):
        super().__init__()
        for name, (low, high) in (("contrast_range", contrast_range),
                                  ("saturation_range", saturation_range)):
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(low, high)}")
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)
        self.image_format = image_format

    def sample_params(self) -> PhotometricParams:
        """Draw one :class:`PhotometricParams` from ``np.random``."""
        brightness = contrast = saturation = hue = None
        if np.random.randint(2):
            brightness = float(np.random.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(np.random.randint(2))
        if np.random.randint(2):
            contrast = float(np.random.uniform(*self.contrast_range))
        if np.random.randint(2):
            saturation = float(np.random.uniform(*self.saturation_range))
        if np.random.randint(2):
            hue = int(np.random.randint(-self.hue_delta, self.hue_delta + 1))
        return PhotometricParams(brightness, contrast, contrast_first, saturation, hue)

    def get_transform(self, image: np.ndarray) -> Transform:
        return PhotometricTransform(self.sample_params(), self.image_format)

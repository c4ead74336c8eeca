"""Class-boundary mask of a label map with tensor ops only (SSA's boundary-aware distillation).

A torch replacement of the official ``cv2.Canny`` + ``cv2.dilate`` boundary (spec cgrseg_ssa.md
B.6 (4), B.10-2): it runs on the labels' device, with no host round-trip.

  1. edge: a valid pixel whose label differs from a valid 3×3 neighbour's (ignore pixels are
     neither edges nor make their neighbours edges);
  2. thinning to ~1 px: of the two sides of a class border only the pixel with the *smaller* label
     is kept (Canny's non-maximum suppression similarly leaves a 1-px line);
  3. a ``border``-pixel frame is zeroed (as the official code does before dilating);
  4. dilation by an ``edge_size`` × ``edge_size`` square (max-pool, stride 1).
"""
import torch
from torch.nn import functional as F

__all__ = ["label_edges", "boundary_mask"]


def _neighbours(x: torch.Tensor, fill: int) -> torch.Tensor:
    """(B, H, W) -> (B, 8, H, W): the 8 neighbours of each pixel; outside the map = ``fill``."""
    h, w = x.shape[-2:]
    p = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="constant", value=fill).squeeze(1)
    shifts = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    return torch.stack([p[:, dy:dy + h, dx:dx + w] for dy, dx in shifts], dim=1)


def label_edges(labels: torch.Tensor, ignore_index: int = 255, thin: bool = True) -> torch.Tensor:
    """Pixels on a class border.

    Args:
        labels: (B, H, W) integer labels.
        ignore_index: label excluded from the borders.
        thin: keep only the smaller-label side of each border (~1 px wide); False = both sides.
    Returns:
        (B, H, W) bool.
    """
    if labels.dim() != 3:
        raise ValueError(f"label_edges: expected (B, H, W) labels, got shape {tuple(labels.shape)}")
    x = labels.long()
    nb = _neighbours(x, fill=ignore_index)  # outside the map counts as ignore: no image-border edges
    centre = x.unsqueeze(1)
    valid = (nb != ignore_index) & (centre != ignore_index)
    differs = (nb > centre) if thin else (nb != centre)
    return (valid & differs).any(dim=1)


def boundary_mask(labels: torch.Tensor, edge_size: int = 3, border: int = 6,
                  ignore_index: int = 255) -> torch.Tensor:
    """Boundary region used by SSA's response-domain distillation.

    Args:
        labels: (B, H, W) integer labels (at the feature resolution the loss is computed on).
        edge_size: side of the square dilation kernel (≥ 1; 1 = no dilation).
        border: width of the frame zeroed before dilation (0 = none).
        ignore_index: label excluded from the borders.
    Returns:
        (B, H, W) bool, on ``labels.device``.
    """
    if edge_size < 1 or border < 0:
        raise ValueError(f"boundary_mask: edge_size must be >= 1 and border >= 0, got {edge_size}, {border}")
    edges = label_edges(labels, ignore_index).float()
    if border > 0:
        frame = torch.zeros_like(edges)
        h, w = edges.shape[-2:]
        frame[:, border:h - border, border:w - border] = 1.0
        edges = edges * frame
    if edge_size > 1:
        lo, hi = (edge_size - 1) // 2, edge_size // 2
        edges = F.max_pool2d(F.pad(edges.unsqueeze(1), (lo, hi, lo, hi)), edge_size, stride=1).squeeze(1)
    return edges > 0

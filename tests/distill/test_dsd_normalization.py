"""DSD's normalisations (DISTILL.DSD.NORMALIZATION) against input size and batch size.

Both terms are means over the batch, so neither changes when the batch is doubled. PSD is a mean
over the N map positions of squared differences of unit vectors, i.e. a cosine distance / N: the
same images at twice the size (nearest-upsampled x2 features: the same per-element content) give
1/4 of the value, and "scale_aware" (x N / N_ref) undoes that. The paper-form CSD, a mean of
cosines between class maps, does not change; the CIRKD form falls as 1/N'^2. Float64 throughout.
"""
import pytest
import torch
from torch.nn import functional as F

from segdet.config import get_segdet_cfg
from segdet.distill.dsd.loss import CSD, PSD
from segdet.distill.dsd.functional import csd_size_factor, psd_size_factor

EXACT = dict(rel=1e-12, abs=0.0)
LAYERS = ("a", "b", "c")


def _up(x, times=1):
    for _ in range(times):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    return x


def _maps(gen, batch, h, w, channels=(3, 5, 4)):
    """One (B, C_l, h, w) map per layer, all at one size (the dilated OS8 setting: no resize)."""
    return {n: torch.randn(batch, c, h, w, generator=gen, dtype=torch.float64) for n, c in zip(LAYERS, channels)}


def _psd(normalization, ref=(64, 128)):
    return PSD(student_layers=LAYERS, teacher_layers=LAYERS, resize_to="largest", student_logits="",
               normalization=normalization, ref_map_size=ref)


def _psd_value(m, s, t):
    return m(s, t, [])["dsd_psd"].item()


def _csd(normalization, form, ref=(64, 128), pool=2):
    return CSD(student_logits="s", teacher_logits="t", form=form, pool=pool, normalization=normalization,
               ref_map_size=ref)


def _csd_value(m, s, t):
    return m({"s": s}, {"t": t}, [])["dsd_csd"].item()


def test_size_factors():
    assert psd_size_factor((64, 128), (64, 128)) == 1.0 and psd_size_factor((32, 32), (64, 128)) == 0.125
    assert csd_size_factor((32, 32), (64, 128), "paper", 2) == 1.0
    # cirkd: (16·16 / (32·64))² after the 2 x 2 ceil-mode pool; 31 x 31 pools to 16 x 16 as well
    assert csd_size_factor((32, 32), (64, 128), "cirkd", 2) == (256 / 2048) ** 2
    assert csd_size_factor((31, 31), (64, 128), "cirkd", 2) == (256 / 2048) ** 2


def test_defaults_are_official_with_the_cirkd_reference():
    d = get_segdet_cfg().DISTILL.DSD
    assert d.NORMALIZATION == "official" and tuple(d.REF_MAP_SIZE) == (64, 128)
    with pytest.raises(ValueError, match="DISTILL.DSD.NORMALIZATION must be one of"):
        _psd("per_pixel")
    with pytest.raises(ValueError, match=r"DISTILL.DSD.REF_MAP_SIZE must be a map size \(h, w\)"):
        _csd("scale_aware", "paper", ref=(0, 4))


def test_psd_equal_to_official_at_the_reference_size():
    gen = torch.Generator().manual_seed(0)
    s, t = _maps(gen, 2, 64, 128), _maps(gen, 2, 64, 128, channels=(6, 2, 3))
    official = _psd_value(_psd("official"), s, t)
    assert official > 0 and _psd_value(_psd("scale_aware"), s, t) == official


def test_psd_scale_aware_invariant_to_images_scaled_x2_official_is_not():
    gen = torch.Generator().manual_seed(1)
    s, t = _maps(gen, 2, 6, 10), _maps(gen, 2, 6, 10, channels=(2, 2, 7))
    s2, t2 = ({n: _up(v) for n, v in d.items()} for d in (s, t))
    for n in ("official", "scale_aware"):
        small, big = _psd_value(_psd(n, ref=(12, 16)), s, t), _psd_value(_psd(n, ref=(12, 16)), s2, t2)
        if n == "official":   # a mean over 4x the positions of the same cosine distance
            assert big == pytest.approx(small / 4, **EXACT)
        else:
            assert big == pytest.approx(small, **EXACT)
    # scale_aware = (1/K) Σ_k mean_b (2 − 2cos) / N_ref, the same number at both sizes
    assert _psd_value(_psd("scale_aware", ref=(12, 16)), s, t) == pytest.approx(
        _psd_value(_psd("official"), s, t) * 60 / 192, **EXACT)


@pytest.mark.parametrize("normalization", ["official", "scale_aware"])
def test_psd_and_csd_invariant_to_the_batch_doubled(normalization):
    gen = torch.Generator().manual_seed(2)
    s, t = _maps(gen, 2, 6, 10), _maps(gen, 2, 6, 10)
    s4, t4 = ({n: torch.cat([v, v]) for n, v in d.items()} for d in (s, t))
    m = _psd(normalization, ref=(12, 16))
    assert _psd_value(m, s4, t4) == pytest.approx(_psd_value(m, s, t), **EXACT)
    zs, zt = (torch.randn(2, 5, 6, 10, generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    for form in ("paper", "cirkd"):
        m = _csd(normalization, form, ref=(12, 16))
        assert _csd_value(m, torch.cat([zs, zs]), torch.cat([zt, zt])) == pytest.approx(
            _csd_value(m, zs, zt), **EXACT)


def test_csd_paper_form_is_size_invariant_as_defined_cirkd_form_is_not():
    """Logits that are themselves a x2 copy of a base map, so that the 2 x 2 pool of the x2 image
    is again a copy: the paper form gives the same value in both modes; the CIRKD form falls by
    (1/4)² "official" and is restored by "scale_aware"."""
    gen = torch.Generator().manual_seed(3)
    base_s, base_t = (torch.randn(2, 5, 4, 6, generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    zs, zt = _up(base_s), _up(base_t)          # 8 x 12
    zs2, zt2 = _up(base_s, 2), _up(base_t, 2)  # 16 x 24, the images scaled x2
    paper = {n: (_csd_value(_csd(n, "paper", ref=(8, 12)), zs, zt),
                 _csd_value(_csd(n, "paper", ref=(8, 12)), zs2, zt2)) for n in ("official", "scale_aware")}
    assert paper["official"][0] > 0
    for small, big in paper.values():
        assert big == pytest.approx(paper["official"][0], **EXACT) and small == paper["official"][0]
    small = _csd_value(_csd("official", "cirkd", ref=(8, 12)), zs, zt)
    assert small > 0
    assert _csd_value(_csd("official", "cirkd", ref=(8, 12)), zs2, zt2) == pytest.approx(small / 16, **EXACT)
    assert _csd_value(_csd("scale_aware", "cirkd", ref=(8, 12)), zs, zt) == small  # at the reference
    assert _csd_value(_csd("scale_aware", "cirkd", ref=(8, 12)), zs2, zt2) == pytest.approx(small, **EXACT)

"""Estimate the slice profile of a thick axis from the image itself.

Anatomy has no preferred direction on average, so the in-plane axes show what the thick axis
would look like with a thin profile. For each candidate profile (box or Gaussian, FWHM
``w`` slice spacings) the in-plane lines are blurred with it and sampled at the slice spacing;
the candidate whose power spectrum (Hann-windowed, averaged over body lines, up to a constant
factor) best matches the thick axis's own spectrum is the estimate. Both spectra include the
aliasing of the thick sampling, so it is matched, not ignored. The idea is that of ESPRESO
(Han et al. 2023: compare degraded in-plane patches with through-plane ones), done here in the
Fourier domain without training.

Hand-written: no library estimates a slice profile.
"""

from __future__ import annotations

import numpy as np

from medsr.consistency import SliceProfile
from medsr.errors import MedsrError
from medsr.geometry import spacing as voxel_size
from medsr.transforms.kernels import FWHM_PER_SIGMA, profile_kernel

WIDTHS = np.round(np.arange(0.5, 2.51, 0.05), 2)
KINDS = ("box", "gaussian")


def _spectrum(lines: np.ndarray) -> np.ndarray:
    """Mean power spectrum (DC dropped) of Hann-windowed, mean-removed lines ``(N, m)``."""
    x = lines - lines.mean(axis=1, keepdims=True)
    x = x * np.hanning(lines.shape[1])[None]
    return np.mean(np.abs(np.fft.rfft(x, axis=1)) ** 2, axis=0)[1:]


def _simulate(lines: np.ndarray, step: float, m: int, kind: str, width_px: float
              ) -> np.ndarray:
    """Blur pixel lines ``(N, L)`` with the profile, sample every ``step`` pixels, ``m`` long."""
    offsets, weights = profile_kernel(1, width_px, kind)
    n = lines.shape[1]
    # centres on whole pixels (as thick slices are made from pixels): no interpolation blur
    centres = np.round(np.arange(m) * step + (n - 1 - (m - 1) * step) / 2.0).astype(int)
    out = np.zeros((lines.shape[0], m))
    for o, w in zip(offsets, weights):
        out += w * lines[:, np.clip(centres + int(o), 0, n - 1)]
    return out


def estimate_profile(array: np.ndarray, affine: np.ndarray, axis: int,
                     max_lines: int = 4000) -> SliceProfile:
    """The slice profile (shape, FWHM in slice spacings) of thick ``axis`` of a 3D scan.

    Raises:
        MedsrError: when the scan has too few slices or no finer in-plane axis to learn from.
    """
    d = voxel_size(affine)
    others = [a for a in range(3) if a != axis]
    step = float(d[axis]) / float(min(d[a] for a in others))
    n_thick = array.shape[axis]
    if step < 1.5 or n_thick < 8:
        raise MedsrError("the slice profile can be estimated only for a thick axis (≥ 1.5× "
                         f"the pixel, ≥ 8 slices); axis {axis} has spacing ×{step:.2f} and "
                         f"{n_thick} slices")
    threshold = float(np.percentile(array[::2, ::2, ::2], 60))
    rng = np.random.default_rng(0)
    # through-plane lines: central m slices of lines along the thick axis
    sims = []
    for a in others:
        moved = np.moveaxis(array, (axis, a), (-1, -2))  # (..., inplane a, thick)
        length = moved.shape[-2]
        m_a = int(min(n_thick, (length - 1) // step + 1))
        if m_a >= 8:
            sims.append((a, moved, m_a))
    if not sims:
        raise MedsrError("the in-plane axes are too short to estimate the slice profile")
    m = min(s[2] for s in sims)
    start = (n_thick - m) // 2
    # through-plane lines with a neighbourhood along an in-plane axis p: in-plane lines of a
    # thick-slice scan are already blurred across (along the thick axis), so the thick lines
    # get the same candidate blur across (along p) and both sides stay alike when it is right
    p = others[0]
    reach = int(np.ceil(WIDTHS.max() * step / 2 + 3 * WIDTHS.max() * step / FWHM_PER_SIGMA))
    moved = np.moveaxis(array, (p, axis), (-2, -1))[..., start:start + m]  # (q, n_p, m)
    moved = moved.reshape(-1, moved.shape[-2], m)
    rows, cols = np.nonzero(moved.mean(axis=-1) > threshold)
    if rows.size < 16:
        rows, cols = np.indices(moved.shape[:2]).reshape(2, -1)
    pick = rng.choice(rows.size, min(max_lines, rows.size), replace=False)
    taps = np.clip(cols[pick, None] + np.arange(-reach, reach + 1)[None], 0, moved.shape[1] - 1)
    blocks = moved[rows[pick, None], taps].astype(np.float64)  # (lines, taps, m)
    blocks = np.swapaxes(blocks, 1, 2)  # (lines, m, taps)
    inplane = []
    for a, moved_a, _ in sims:
        lines = np.swapaxes(moved_a, -1, -2).reshape(-1, moved_a.shape[-2])  # lines along a
        good = lines.mean(axis=1) > threshold
        lines = lines[good] if good.sum() >= 16 else lines
        inplane.append(lines[rng.choice(len(lines), min(max_lines // len(sims), len(lines)),
                                        replace=False)].astype(np.float64))
    best = (np.inf, "box", 1.0)
    for kind in KINDS:
        for w in WIDTHS:
            offsets, weights = profile_kernel(1, w * step, kind)
            across = np.zeros(2 * reach + 1)
            np.add.at(across, np.clip(offsets.astype(int) + reach, 0, 2 * reach), weights)
            target = np.log(_spectrum(blocks @ across) + 1e-12)
            spec = np.mean([_spectrum(_simulate(lines, step, m, kind, w * step))
                            for lines in inplane], axis=0)
            diff = target - np.log(spec + 1e-12)
            cost = float(np.mean((diff - diff.mean()) ** 2))
            if cost < best[0]:
                best = (cost, kind, float(w))
    return SliceProfile(best[1], best[2])

"""The noise of a scan, measured on the scan, and what the learned methods do with it.

Real thick slices carry noise. A network trained with noise removes it, but an exact data
consistency projection (:mod:`medsr.consistency`) would put it back: it makes the output
re-degrade to the noisy input exactly. So the projection fits within the noise instead: the
residual ``r = lr - D out`` is corrected by the Wiener gain ``max(0, 1 - σ² / mean(r²))``
(:func:`noise_gain`), all of it when the residual is far above the noise (the network's own
error), none of it when the residual is the noise. The gain is measured once per run, on the
per-scan self-check's pairs (:mod:`medsr.selfcheck`), whose LR carries the scan's noise
(:func:`top_up_sd`), so every slab of the output is projected alike; the self-supervised pairs
carry the same noise, so the network learns to remove it.

The estimate is Immerkær's (1996) 3×3 Laplacian difference mask over the planes of the measured
slices, with the median absolute response inside the body instead of the mean, so edges and
texture count little (on clean Colin27 slices: 0.7 of 255, against 1.0 for the mean; on
slices with Rician σ = 7.6: 7.7). Hand-written: MONAI and SimpleITK have no noise estimator,
and scikit-image's wavelet one is not a dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the median of |N(0, 1)|
_MEDIAN_ABS = 0.6744897501960817


def noise_sd(volume: np.ndarray, axis: int, lo: float | None = None,
             body: np.ndarray | None = None) -> float:
    """Standard deviation of white noise in the planes across ``axis`` of ``volume``,
    measured inside the body: intensity above ``lo`` (default: Otsu's threshold), or where
    the boolean ``body`` (same shape) is set."""
    from medsr.metrics import otsu_threshold

    planes = np.moveaxis(np.asarray(volume), axis, 0).astype(np.float32, copy=False)
    if min(planes.shape[1:]) < 3:
        return 0.0
    x = planes[:, :-2, :-2] - 2 * planes[:, 1:-1, :-2] + planes[:, 2:, :-2]
    x = x - 2 * (planes[:, :-2, 1:-1] - 2 * planes[:, 1:-1, 1:-1] + planes[:, 2:, 1:-1])
    x = x + planes[:, :-2, 2:] - 2 * planes[:, 1:-1, 2:] + planes[:, 2:, 2:]
    if body is not None:
        body = np.moveaxis(np.asarray(body, dtype=bool), axis, 0)[:, 1:-1, 1:-1]
    else:
        lo = otsu_threshold(planes) if lo is None else lo
        body = planes[:, 1:-1, 1:-1] > lo
    if not body.any():
        return 0.0
    # the mask's weights square-sum to 36: its response to white noise has sd 6σ
    return float(np.median(np.abs(x[body])) / (6.0 * _MEDIAN_ABS))


def series_noise_sd(frames: np.ndarray, lo: float | None = None, pairs: int = 4) -> float:
    """Standard deviation of white noise in one volume of a series ``(T, X, Y, Z)``, from the
    difference of consecutive volumes inside the body (intensity of their mean above ``lo``,
    default Otsu's threshold): the median absolute difference over ``pairs`` consecutive
    pairs spread over the series. Motion and signal change only add to the difference, so it
    is an upper bound, like :func:`noise_sd`'s (which anatomy raises on coarse grids); 0 for
    fewer than two volumes."""
    from medsr.metrics import otsu_threshold

    frames = np.asarray(frames)
    t = frames.shape[0]
    if t < 2:
        return 0.0
    starts = np.unique(np.linspace(0, t - 2, min(pairs, t - 1)).round().astype(int))
    values = []
    for i in starts:
        a, b = frames[i].astype(np.float32), frames[i + 1].astype(np.float32)
        mean = (a + b) / 2
        body = mean > (otsu_threshold(mean) if lo is None else lo)
        if body.any():
            values.append(np.abs(a[body] - b[body]))
    if not values:
        return 0.0
    # the difference of two volumes has sd √2 σ
    return float(np.median(np.concatenate(values)) / (np.sqrt(2.0) * _MEDIAN_ABS))


def measured_plane_axis(shape: Sequence[int], spacing: Sequence[float],
                        upscaled: Sequence[int]) -> int:
    """The axis across which the measured planes lie: the thick axis of a through-plane
    request, else an axis left alone (in-plane SR), else the coarsest."""
    upscaled = list(upscaled)
    if len(upscaled) == 1:
        return upscaled[0]
    kept = [a for a in range(len(shape)) if a not in upscaled and shape[a] > 1]
    if kept:
        return kept[0]
    return int(np.argmax(spacing))


def scan_noise(up, reference: np.ndarray, lo: float | None = None,
               frames: np.ndarray | None = None) -> float:
    """The noise of the measured samples of a request (an :class:`medsr.methods.Upscaler`
    ``up`` on the 3D ``reference``): ``up.noise_sd`` when set, else measured on the thick
    slices of a through-plane request. In-plane requests (and chains) measure none: their
    measured planes are the coarse ones, where the estimate reads anatomy as noise (5.4 of
    255 on Colin27 at ×3 in-plane, whose noise is under 1), and their models trained clean.

    For a series (``frames``, ``(T, X, Y, Z)`` with T ≥ 2) the noise of one volume is the
    smaller of two upper bounds: the planes' estimate on its first volume and the difference
    of consecutive volumes (:func:`series_noise_sd`), which anatomy does not raise."""
    from medsr.geometry import spacing

    if up.noise_sd is not None:
        return float(up.noise_sd)
    if up.axis is None:  # in-plane SR, chains: the measured planes are the coarse ones,
        return 0.0       # where anatomy reads as noise; exact consistency there
    axes = [op[0] for op in up.operators()] or [up.axis]
    series = frames is not None and len(frames) >= 2
    one = frames[0] if series else reference
    sd = noise_sd(one, measured_plane_axis(one.shape, spacing(up.affine), axes), lo)
    return min(sd, series_noise_sd(frames, lo)) if series else sd


def residual_gain(pieces: Sequence[tuple[np.ndarray, np.ndarray]], axis: int,
                  sd: float) -> float:
    """The Wiener gain for re-degradation residuals ``(residual, lr)`` of measured ``lr``
    arrays: over the body (``lr`` above Otsu's threshold, where the noise is whole; MR's
    background noise is Rician and smaller), the residual's mean square against the noise
    left in it (measured on it, across ``axis``, at most ``sd``: what a network removed of
    the scan's noise is there, what it kept is not)."""
    from medsr.metrics import otsu_threshold

    if sd <= 0 or not pieces:
        return 1.0
    lo = otsu_threshold(np.concatenate([np.ravel(lr) for _, lr in pieces]))
    total, count, left = 0.0, 0, []
    for residual, lr in pieces:
        body = np.asarray(lr) > lo
        if not body.any():
            continue
        total += float(np.sum(np.square(residual[body], dtype=np.float64)))
        count += int(body.sum())
        left.append(noise_sd(residual, axis, body=body))
    if not count:
        return 1.0
    return noise_gain(total / count, min(sd, float(np.mean(left))))


def noise_gain(mean_square_residual: float, sd: float) -> float:
    """Share of the residual the projection corrects: the Wiener gain of a residual of mean
    square ``mean_square_residual`` over noise of standard deviation ``sd`` (1: exact)."""
    if sd <= 0 or mean_square_residual <= 0:
        return 1.0
    return float(max(0.0, 1.0 - sd * sd / mean_square_residual))


def projection_gain(up, pairs: Sequence[tuple[np.ndarray, np.ndarray]], ops=None,
                    axis: int | None = None) -> float:
    """The gain of the consistency projection for ``up`` (an Upscaler): the one fixed for the
    whole run (``up.consistency_gain``, from the self-check's pairs), else the Wiener gain of
    the residuals of ``(estimate, lr)`` ``pairs`` together over the scan's noise. ``ops``
    (default ``up.operators()``) degrade the estimates; ``axis`` is the one the measured planes
    lie across (default: from the request)."""
    from medsr.consistency import degrade_axes
    from medsr.geometry import spacing

    if up.consistency_gain is not None:
        return float(up.consistency_gain)
    sd = up.noise_sd or 0.0
    if sd <= 0 or not pairs:
        return 1.0
    ops = up.operators() if ops is None else ops
    if axis is None:
        axis = measured_plane_axis(pairs[0][1].shape, spacing(up.affine),
                                   [op[0] for op in ops])
    return residual_gain([(np.asarray(lr, dtype=np.float32) - degrade_axes(est, ops), lr)
                          for est, lr in pairs], axis, sd)


def top_up_sd(sd: float, weights_square_sum: float) -> float:
    """The noise to add to a simulated measurement whose samples are weighted sums (weights
    square-summing to ``weights_square_sum``) of a volume with noise ``sd``, so that it carries
    ``sd`` as the real measurement does."""
    return float(sd * np.sqrt(max(0.0, 1.0 - weights_square_sum)))


def add_top_up(lr: np.ndarray, sd: float, seed: int = 0) -> np.ndarray:
    """``lr`` with white Gaussian noise of ``sd`` added (float32; ``lr`` itself when 0)."""
    if sd <= 0:
        return lr
    rng = np.random.default_rng(seed)
    return (lr + rng.normal(0.0, sd, lr.shape)).astype(np.float32)

"""Training data: cached normalised volumes, and (LR, HR) patch pairs made on the fly.

Volumes are read once through a MONAI ``CacheDataset`` (``LoadVolumed`` + normalisation) and
kept as plain tensors (no MetaTensor overhead in the hot loop). Batch ``s`` is a pure function
of ``(seed, s, rank)``, so a resumed run sees exactly the data an uninterrupted one would.

2D networks learn from planes whose two axes are both high resolution (all three orientations
of an isotropic volume; only the in-plane one of a thick-slice scan), degraded along one of
their axes. 3D networks learn from volumes that are high resolution along all three axes. The
degraded axis is always moved last, matching the network's scale ``(1, …, f)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsr.errors import MedsrError
from medsr.geometry import spacing
from medsr.io import VOLUME_SUFFIXES
from medsr.nets import interpolate
from medsr.resample import upsample_axis
from medsr.training.config import TrainConfig, factor_range
from medsr.transforms.degrade import add_noise, gaussian_psf, kspace_truncate, slice_profile
from medsr.transforms.intensity import default_normalization, fit_scaling

logger = logging.getLogger(__name__)

#: LR voxels of context on each side of an in-plane patch, degraded and then cut away
PLANE_MARGIN = 4



def find_volumes(entries: list[str]) -> list[Path]:
    """Expand files and folders into volume paths (a folder without volume files is DICOM)."""
    found: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
            found.extend(files if files else [path])
        else:
            raise MedsrError(f"training data {path} does not exist")
    if not found:
        raise MedsrError("no training volumes found")
    return found


@dataclass
class Volume:
    """A normalised volume, the axes along which it is high resolution, and (optionally)
    the only axes that may be degraded (default: any high-resolution one)."""

    path: str
    data: torch.Tensor  # (X, Y, Z) float32, normalised
    hr_axes: tuple[int, ...]
    lr_axes: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None  # mm, for messages


def load_volumes(paths: list[Path], cfg: TrainConfig) -> list[Volume]:
    """Read and normalise volumes through a MONAI CacheDataset."""
    from monai.data import CacheDataset
    from monai.transforms import Compose, Lambdad

    from medsr.io import load_volume

    spec = cfg.data.normalization or default_normalization(cfg.data.modality)

    def normalise(vol):
        scaling = fit_scaling(vol, spec)
        return scaling.forward(vol)

    dataset = CacheDataset([{"image": str(p)} for p in paths],
                           Compose([Lambdad("image", load_volume), Lambdad("image", normalise)]),
                           progress=False, num_workers=0)
    volumes = []
    for item, path in zip(dataset, paths):
        vol = item["image"]
        d = spacing(np.asarray(vol.affine))
        hr = tuple(int(a) for a in np.flatnonzero(d <= cfg.data.hr_spacing_tolerance * d.min()))
        volumes.append(Volume(str(path), vol.as_tensor()[0].float().contiguous(), hr,
                              spacing=tuple(float(x) for x in d)))
    return volumes


class PairSampler:
    """Makes batches of (LR, HR) patches; batch ``step`` depends only on (seed, step, rank)."""

    def __init__(self, volumes: list[Volume], cfg: TrainConfig, rank: int = 0,
                 stream: int = 0) -> None:
        self.cfg, self.rank, self.stream = cfg, rank, stream
        dims = cfg.network.spatial_dims
        self.choices = []  # (volume index, axis order) with the LR axis last
        for i, v in enumerate(volumes):
            hr = set(v.hr_axes)
            if dims == 2:
                for normal in range(3):
                    plane = [a for a in range(3) if a != normal]
                    if set(plane) <= hr:
                        self.choices += [(i, normal, a, b) for a, b in (plane, plane[::-1])
                                         if v.lr_axes is None or b in v.lr_axes]
            elif hr == {0, 1, 2}:
                self.choices += [(i, *order) for order in ((1, 2, 0), (0, 2, 1), (0, 1, 2))]
        if not self.choices:
            raise MedsrError("no training volume is high resolution where the network needs it "
                             f"({'a plane' if dims == 2 else 'all three axes'}){_hint(volumes)}")
        self.volumes = volumes

    def _patch(self, rng: np.random.Generator, factor: int, margin: int = 0) -> torch.Tensor:
        size = list(self.cfg.patch.size)
        for a in range(-self.cfg.degradation.axes, 0):  # whole LR voxels, and the margin
            size[a] = factor * (max(2, round(size[a] / factor)) + 2 * margin)
        zoom = self._zoom(rng)
        cut = [round(n * zoom) for n in size] if zoom > 1 else size
        for _ in range(20):
            i, *order = self.choices[rng.integers(len(self.choices))]
            vol = self.volumes[i].data
            if len(order) == 3 and self.cfg.network.spatial_dims == 2:
                normal, a, b = order
                view = vol.movedim(normal, 0)[int(rng.integers(vol.shape[normal]))]
                view = view if a < b else view.T  # plane axes in (a, b) order, b degraded
            else:
                view = vol.permute(*order)
            patch = _random_crop(view, cut, rng)
            foreground = (patch > self.cfg.patch.foreground_threshold).float().mean()
            if float(foreground) >= self.cfg.patch.min_foreground:
                break
        p = self.cfg.patch
        if cut != size:
            sinc = p.zoom_kspace_probability > 0 and rng.random() < p.zoom_kspace_probability
            patch = shrink_kspace(patch, size) if sinc else shrink(patch, size)
        if p.contrast_probability > 0 and rng.random() < p.contrast_probability:
            patch = remap_contrast(patch, rng)
        if p.fine_blur_probability > 0 and rng.random() < p.fine_blur_probability:
            fwhm = float(rng.uniform(*p.fine_blur))
            patch = gaussian_psf(patch[None], [fwhm] * (patch.ndim - 1) + [0.0])[0]
        if rng.random() < 0.5:  # flips along the axes that are not degraded
            patch = patch.flip(0)
        if self.cfg.degradation.axes == 2 and rng.random() < 0.5:
            patch = patch.transpose(0, 1).contiguous()
        return patch

    def _zoom(self, rng: np.random.Generator) -> float:
        """This patch's scale augmentation factor (1: none); drawn only when it is enabled,
        so configs without it draw what they drew."""
        p = self.cfg.patch
        if p.zoom_probability <= 0 or p.zoom[1] <= 1.0:
            return 1.0
        if rng.random() >= p.zoom_probability:
            return 1.0
        return float(rng.uniform(*p.zoom))

    def _noise(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The LR image with Gaussian or Rician noise of a std drawn from the config."""
        d = self.cfg.degradation
        if d.noise_probability < 1.0 and rng.random() >= d.noise_probability:
            return x
        sigma = float(rng.uniform(*d.noise))
        if sigma > 0:
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            x = add_noise(x, sigma, rician=d.rician, generator=gen)
        return x

    def _degrade_plane(self, hr: torch.Tensor, rng: np.random.Generator, factor: int
                       ) -> torch.Tensor:
        """Both axes of a 2D patch degraded ×factor (in-plane SR)."""
        d = self.cfg.degradation
        x = hr[None]
        fwhm = float(rng.uniform(*d.blur_fwhm))
        if fwhm > 0:
            x = gaussian_psf(x, [fwhm, fwhm])
        profile = d.profiles[int(rng.integers(len(d.profiles)))]
        if profile == "kspace":
            x = kspace_truncate(x, (0, 1), factor)
        else:
            thickness = float(rng.uniform(*d.thickness)) * factor
            for axis in (0, 1):
                x = slice_profile(x, axis, factor, thickness, profile)
        return self._noise(x, rng)

    def _degrade(self, hr: torch.Tensor, rng: np.random.Generator, factor: int) -> torch.Tensor:
        d = self.cfg.degradation
        x = hr[None]
        axes = tuple(range(hr.ndim - 1))
        if d.kspace > 0 and rng.random() < d.kspace:
            x = kspace_truncate(x, axes, 2, downsample=False)
        fwhm = float(rng.uniform(*d.blur_fwhm))
        if fwhm > 0:
            x = gaussian_psf(x, [fwhm] * len(axes) + [0.0])
        thickness = float(rng.uniform(*d.thickness)) * factor
        profile = d.profiles[int(rng.integers(len(d.profiles)))]
        x = slice_profile(x, hr.ndim - 1, factor, thickness, profile)
        return self._noise(x, rng)

    def batch(self, step: int, size: int | None = None, factor: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input, hr)``: input ``(B, 1, ..., n/f)``, or ``(B, 1, ..., n)`` when the network
        takes the interpolated input; one factor per batch (drawn when it is a range)."""
        rng = np.random.default_rng([self.cfg.seed, self.stream, self.rank, step])
        lo, hi = factor_range(self.cfg.degradation)
        f = factor or int(rng.integers(lo, hi + 1))
        hrs, lrs = [], []
        for _ in range(size or self.cfg.patch.batch_size):
            if self.cfg.degradation.axes == 2:  # degraded with a margin: k-space wraps round
                hr = self._patch(rng, f, PLANE_MARGIN)
                m = PLANE_MARGIN
                lrs.append(self._degrade_plane(hr, rng, f)[:, m:-m, m:-m])
                hr = hr[m * f:-m * f, m * f:-m * f]
            else:
                hr = self._patch(rng, f)
                lrs.append(self._degrade(hr, rng, f))
            hrs.append(hr[None])
        lr = torch.stack(lrs)
        if self.cfg.network.input == "interpolated":
            lr = interpolate_input(lr, f, self.cfg.network.interpolation)
        return lr, torch.stack(hrs)


def _hint(volumes: list[Volume]) -> str:
    """How to let the volumes count as high resolution: the tolerance they would need."""
    ratios = [max(v.spacing) / min(v.spacing) for v in volumes if v.spacing]
    if not ratios:
        return ""
    need = min(ratios)
    return (f"; the most isotropic volume has spacings up to {need:.2f}× its finest: set "
            f"data.hr_spacing_tolerance: {math.ceil(need * 100) / 100:.2f} (or more) to train "
            "on it as the high-resolution reference")


def shrink(patch: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``patch`` resampled to ``size`` with an anti-aliased filter (scale augmentation): the
    same anatomy as a scanner with a coarser grid would have measured it."""
    x = patch[None, None]
    if patch.ndim == 2:  # anti-aliased bicubic: a filter as wide as the shrink
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True,
                                            align_corners=False)
    else:  # 3D has no anti-aliased mode: area averaging
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    return x[0, 0].contiguous()


def shrink_kspace(patch: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``patch`` (2D) resampled to ``size`` by keeping the central ``size`` of its k-space: a
    sinc point-spread function, ringing included, as an MR scanner with a coarser grid
    measures. The patch is mirrored to twice its size first, so its edges do not ring."""
    n0, n1 = patch.shape
    m0, m1 = size
    big = torch.cat([patch, patch.flip(0)], 0)
    big = torch.cat([big, big.flip(1)], 1)  # (2 n0, 2 n1), continuous when wrapped round
    k = torch.fft.fftshift(torch.fft.fft2(big.double()))
    c0, c1 = n0 - m0, n1 - m1  # start of the central (2 m0, 2 m1) block of the (2 n0, 2 n1)
    small = torch.fft.ifft2(torch.fft.ifftshift(k[c0:c0 + 2 * m0, c1:c1 + 2 * m1])).real
    return (small[:m0, :m1] * (m0 * m1) / (n0 * n1)).float().contiguous()


def remap_contrast(patch: torch.Tensor, rng: np.random.Generator, knots: int = 6
                   ) -> torch.Tensor:
    """``patch`` (normalised, ~[0, 1]) through a random piecewise-linear curve: 0 stays 0
    (MR background is dark in every contrast), the other knots are drawn in [0, 1], so
    tissues may swap order (a T1 made to look T2-like) and the result keeps the range."""
    xs = np.linspace(0.0, 1.0, knots)
    ys = np.concatenate([[0.0], rng.uniform(0.0, 1.0, knots - 1)])
    ys /= max(ys.max(), 1e-3)
    values = np.interp(patch.numpy(), xs, ys).astype(np.float32)  # flat beyond the ends
    return torch.from_numpy(values)


def _random_crop(view: torch.Tensor, size: list[int], rng: np.random.Generator) -> torch.Tensor:
    pads = []
    for n, s in zip(reversed(view.shape), reversed(size)):
        pads += [0, max(0, s - n)]
    if any(pads):
        view = torch.nn.functional.pad(view[None], pads)[0]
    starts = [int(rng.integers(n - s + 1)) for n, s in zip(view.shape, size)]
    return view[tuple(slice(a, a + s) for a, s in zip(starts, size))].contiguous()


def interpolate_input(lr: torch.Tensor, factor: int, method: str) -> torch.Tensor:
    """The HR-grid input of a refining network: ``lr`` ``(B, 1, ..., m)`` interpolated ×factor
    along its last axis, with the interpolator inference uses (:func:`upsample_axis`)."""
    if method == "linear":
        return interpolate(lr, [1] * (lr.ndim - 3) + [factor])
    flat = lr.reshape(-1, *lr.shape[-2:]).numpy()  # (B·..., H, W): a 3D array
    up = upsample_axis(flat, 2, factor, method)
    return torch.from_numpy(up).reshape(*lr.shape[:-1], lr.shape[-1] * factor)

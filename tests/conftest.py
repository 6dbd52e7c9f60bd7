"""Synthetic volumes and geometries shared by the tests (nothing is read from outside the repo)."""

from __future__ import annotations

import numpy as np
import pytest


def rotation(axis, degrees: float) -> np.ndarray:
    """3×3 rotation about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def make_affine(directions: np.ndarray, spacing, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(directions) * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = origin
    return affine


#: RAS affines a writer must keep exactly: oblique, flipped, anisotropic (and mixed).
AFFINES = {
    "anisotropic": make_affine(np.eye(3), (0.7, 0.9, 5.0), (-40.0, 25.5, 12.25)),
    "flipped": make_affine(np.diag([-1.0, 1.0, -1.0]), (1.0, 1.2, 3.0), (30.0, -20.0, 60.0)),
    "oblique": make_affine(rotation((1, 2, 3), 27.0), (0.8, 0.8, 4.0), (-12.3, 45.6, -7.8)),
    "oblique_flipped": make_affine(rotation((0.3, -1, 0.2), 61.0) @ np.diag([1.0, -1.0, 1.0]),
                                   (0.6, 1.1, 6.5), (101.0, -3.0, 17.0)),
}


def phantom(shape=(24, 20, 10), seed: int = 0) -> np.ndarray:
    """Head-like phantom: nested ellipsoids with sharp edges, a gradient and fine texture."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum((g / s) ** 2 for g, s in zip(grids, (0.85, 0.75, 0.9)))
    vol = np.where(r2 < 1.0, 800.0, 0.0)
    vol += np.where(sum((g / s) ** 2 for g, s in zip(grids, (0.5, 0.4, 0.6))) < 1.0, 400.0, 0.0)
    vol += 150.0 * grids[0] + 40.0 * np.sin(9 * grids[1]) * (r2 < 1.0)
    vol += rng.normal(0.0, 10.0, size=shape) * (r2 < 1.0)
    return vol.astype(np.float32)


def write_phantom_nifti(path, affine: np.ndarray):
    """A small int16 phantom (16×14×5) saved as NIfTI with ``affine`` as its sform."""
    import nibabel as nib

    img = nib.Nifti1Image(np.rint(phantom((16, 14, 5))).astype(np.int16), affine)
    img.set_sform(affine, code=1)
    img.to_filename(str(path))
    return path


@pytest.fixture(params=sorted(AFFINES))
def affine(request) -> np.ndarray:
    return AFFINES[request.param].copy()


@pytest.fixture
def openvino_precisions(monkeypatch) -> list[str]:
    """The arithmetic ("bf16", "f32") of every OpenVINO session made while the test runs."""
    from medsr import runtime

    made: list[str] = []
    real = runtime._OpenVino.__init__

    def spy(self, graph):
        real(self, graph)
        made.append(self.precision)

    monkeypatch.setattr(runtime._OpenVino, "__init__", spy)
    return made

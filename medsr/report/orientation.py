"""Radiological display of a volume's planes and their orientation labels, from the affine.

A plane is shown as a radiology viewer shows it: the array axes are matched to the nearest
patient axes (as :func:`nibabel.orientations.io_orientation` does) and flipped so that the
screen's right and bottom point to the patient's left (L), posterior (P) or inferior (I):

=========  ==================  =============  ==============
view       normal              screen right   screen bottom
=========  ==================  =============  ==============
axial      S/I                 L              P
coronal    A/P                 L              I
sagittal   R/L                 P              I
=========  ==================  =============  ==============

Each edge is labelled with the patient direction it points to, computed from the affine's
direction of the array axis along that edge: the letters of its components (RAS+: +x is R,
+y is A, +z is S), largest first, keeping the ones of at least :data:`OBLIQUE` (the first
letter always). A volume rotated 30° about S thus shows ``LP`` rather than ``L`` on the right
of its axial view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: a direction component at least this large (cosine) adds its letter to an edge label
OBLIQUE = 0.25
#: view name -> (world axis of the normal, world axis across the screen, world axis down it)
VIEWS = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))


def direction_label(vector) -> str:
    """Patient-direction letters of a RAS direction, e.g. ``(1, 0, 0) -> "R"``,
    ``(-0.87, -0.5, 0) -> "LP"``."""
    v = np.asarray(vector, dtype=np.float64)
    v = v / (np.linalg.norm(v) or 1.0)
    order = np.argsort(-np.abs(v), kind="stable")
    letters = [_LETTERS[i][0 if v[i] > 0 else 1] for n, i in enumerate(order)
               if n == 0 or abs(v[i]) >= OBLIQUE]
    return "".join(letters)


def orientation_code(affine) -> str:
    """Three letters, the patient direction each array axis points to (nearest), e.g. ``RAS``
    or ``LPS``."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return "".join(direction_label(a[:, i])[0] for i in range(3))


def obliquity_degrees(affine) -> float:
    """Largest angle (degrees) between an array axis and its nearest patient axis."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(a).max(axis=0) / np.linalg.norm(a, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


@dataclass(frozen=True)
class View:
    """How one plane of a volume is displayed.

    Attributes:
        name: ``axial``, ``coronal`` or ``sagittal``.
        fixed: the array axis held at one index (the plane's normal).
        across: the array axis shown left to right; ``down``: the one shown top to bottom.
        flip_across, flip_down: that axis is reversed on screen.
        labels: patient-direction letters at the ``left``, ``right``, ``top`` and ``bottom``
            edges.
        pixel: displayed pixel size (width, height) in mm.
    """

    name: str
    fixed: int
    across: int
    down: int
    flip_across: bool
    flip_down: bool
    labels: dict
    pixel: tuple[float, float]

    def plane(self, array: np.ndarray, index: int) -> np.ndarray:
        """The 2D image (rows top to bottom) of ``array`` ``(X, Y, Z)`` at ``index``."""
        image = np.take(array, index, axis=self.fixed)
        rest = [a for a in range(3) if a != self.fixed]
        image = image.T if rest.index(self.down) == 1 else image
        return image[::-1 if self.flip_down else 1, ::-1 if self.flip_across else 1]


def views(affine) -> dict[str, View]:
    """The axial, coronal and sagittal :class:`View` of a volume with this RAS affine."""
    from nibabel.orientations import io_orientation

    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    zooms = np.linalg.norm(a, axis=0)
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    axis_of = {int(w): i for i, (w, _) in enumerate(ornt)}  # world axis -> array axis
    sign_of = {int(w): float(s) for w, s in ornt}
    out = {}
    for name, (normal, across_w, down_w) in VIEWS.items():
        across, down = axis_of[across_w], axis_of[down_w]
        # screen right and bottom point to the negative world direction in all three views
        flip_across, flip_down = sign_of[across_w] > 0, sign_of[down_w] > 0
        right = a[:, across] * (-1 if flip_across else 1)
        bottom = a[:, down] * (-1 if flip_down else 1)
        labels = {"left": direction_label(-right), "right": direction_label(right),
                  "top": direction_label(-bottom), "bottom": direction_label(bottom)}
        out[name] = View(name, axis_of[normal], across, down, flip_across, flip_down, labels,
                         (float(zooms[across]), float(zooms[down])))
    return out

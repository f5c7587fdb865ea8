"""Positions and spin-2 fields on the celestial sphere (vectorised numpy).

Sky positions are right ascension and declination in degrees. A flat grid on
the sky is the gnomonic (TAN) projection about a centre ``(ra0, dec0)``: the
plane tangent to the sphere at the centre, with x along the local east (RA
grows with x) and y along the local north at the centre (Dec grows with y),
as in a FITS ``RA---TAN``/``DEC--TAN`` WCS with positive ``CDELT1`` and
``CDELT2``. Plane coordinates are in degrees (FITS intermediate world
coordinates); a grid divides them by its pixel side.

At a pole the direction "north at the centre" is undefined; the convention
is the limit of centres approaching the pole along the meridian ``ra0``: for
``(ra0, +90)`` the grid's up (+y) points along the meridian ``ra0 + 180`` deg
and its right (+x) along ``ra0 + 90`` deg. A FITS WCS states this with
``LONPOLE = 180``, its default except for a centre exactly on the north pole
(where the default, 0, turns the grid by 180°), so grids write it always.

Ellipticities and shears are spin-2: in a frame rotated by ψ they change as
``e → e · exp(−2iψ)`` with ``e = e1 + i e2``. Catalogues give them in each
galaxy's local frame (e1 > 0: elongated east-west, e2 > 0: along north-east),
a map needs them in the grid frame; `to_grid_frame` and `to_local_frame`
convert between the two.
"""

import numpy as np

__all__ = [
    'unit_vectors',
    'radec_from_vectors',
    'as_center',
    'field_center',
    'gnomonic',
    'inverse_gnomonic',
    'grid_up_angle',
    'rotate_spin2',
    'to_grid_frame',
    'to_local_frame',
]

# A mean direction closer than this to a pole (radians, 2e-5 arcsec) is put
# on the pole exactly, with the conventional ra0 = 0.
_POLE_TOLERANCE = 1e-10
# Below this length the mean of the unit vectors has no usable direction.
_MIN_MEAN_LENGTH = 1e-6


def unit_vectors(ra, dec):
  """Cartesian unit vectors ``[..., 3]`` of sky positions (deg).

  x points to (RA 0, Dec 0), y to (RA 90°, Dec 0) and z to the north pole.
  """
  ra, dec = np.deg2rad(ra), np.deg2rad(dec)
  cos_dec = np.cos(dec)
  return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)],
                  axis=-1)


def radec_from_vectors(vectors):
  """RA in [0, 360) and Dec in [−90, 90] (deg) of vectors ``[..., 3]``.

  The vectors need not be normalised.
  """
  v = np.asarray(vectors, dtype=np.float64)
  ra = np.rad2deg(np.arctan2(v[..., 1], v[..., 0])) % 360.0
  ra = np.where(ra == 360.0, 0.0, ra)  # -1e-15 % 360 rounds to 360.
  dec = np.rad2deg(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
  return ra, dec


def as_center(center):
  """Validates a centre ``(ra0, dec0)`` in degrees; returns two floats.

  Raises:
    ValueError: unless ``center`` is a pair of finite numbers with
      |dec0| <= 90.
  """
  try:
    ra0, dec0 = (float(c) for c in center)
  except (TypeError, ValueError) as exc:
    raise ValueError(f'center must be a pair (ra, dec) in deg, got {center!r}.'
                     ) from exc
  if not (np.isfinite(ra0) and np.isfinite(dec0) and abs(dec0) <= 90):
    raise ValueError('center must be finite (ra, dec) in deg with |dec| <= 90, '
                     f'got {center!r}.')
  return ra0, dec0


def _tangent_basis(center):
  """Unit vectors (centre, east, north) ``[3]`` of the tangent plane."""
  ra0, dec0 = np.deg2rad(as_center(center))
  sin_ra, cos_ra = np.sin(ra0), np.cos(ra0)
  sin_dec, cos_dec = np.sin(dec0), np.cos(dec0)
  if abs(dec0) == np.pi / 2:  # cos(pi/2) is 6e-17, not 0.
    cos_dec = 0.0
  t = np.array([cos_dec * cos_ra, cos_dec * sin_ra, sin_dec])
  east = np.array([-sin_ra, cos_ra, 0.0])
  north = np.array([-sin_dec * cos_ra, -sin_dec * sin_ra, cos_dec])
  return t, east, north


def field_center(ra, dec):
  """Centre of a set of sky positions: the direction of their mean vector.

  Unlike the mean or median of RA and Dec, this is right for fields across
  RA = 0 and around a pole. A centre within 1e-10 rad of a pole is put on
  the pole with ra0 = 0 (the orientation convention of the module docstring).

  Args:
    ra, dec: arrays of positions in degrees.

  Returns:
    (ra0, dec0) in degrees, ra0 in [0, 360).

  Raises:
    ValueError: if there is no position, or the positions surround the
      sphere so that their mean vector (length < 1e-6) has no direction.
  """
  vectors = unit_vectors(np.ravel(ra), np.ravel(dec))
  if vectors.shape[0] == 0:
    raise ValueError('field_center needs at least one position, got none.')
  mean = vectors.mean(axis=0)
  length = np.linalg.norm(mean)
  if not length >= _MIN_MEAN_LENGTH:
    raise ValueError(
        f'the {vectors.shape[0]} positions surround the sphere (mean unit '
        f'vector of length {length:.2e}) and have no centre; give one.')
  if np.hypot(mean[0], mean[1]) <= _POLE_TOLERANCE * length:
    return 0.0, float(np.copysign(90.0, mean[2]))
  ra0, dec0 = radec_from_vectors(mean)
  return float(ra0), float(dec0)


def gnomonic(ra, dec, center):
  """Gnomonic (TAN) projection of sky positions about ``center``.

  A position with unit vector g maps to ``(g·ê, g·n̂) / (g·t)`` (radians, then
  degrees), with t the centre and ê, n̂ the east and north unit vectors
  there: the point where the line from the sphere's centre through g meets
  the plane tangent at t. This is the FITS TAN projection with x growing
  with RA and y with Dec.

  Args:
    ra, dec: arrays of positions in degrees (broadcastable).
    center: (ra0, dec0) of the tangent point in degrees.

  Returns:
    (x, y): plane coordinates in degrees; NaN for positions 90° or more from
    the centre (the far hemisphere has no image).
  """
  t, east, north = _tangent_basis(center)
  g = unit_vectors(ra, dec)
  cos_c = g @ t
  with np.errstate(divide='ignore', invalid='ignore'):
    scale = np.where(cos_c > 0, np.rad2deg(1.0) / cos_c, np.nan)
  return (g @ east) * scale, (g @ north) * scale


def inverse_gnomonic(x, y, center):
  """Sky positions of gnomonic plane coordinates; inverse of `gnomonic`.

  Args:
    x, y: arrays of plane coordinates in degrees (broadcastable).
    center: (ra0, dec0) of the tangent point in degrees.

  Returns:
    (ra, dec) in degrees, ra in [0, 360).
  """
  t, east, north = _tangent_basis(center)
  x, y = np.broadcast_arrays(np.deg2rad(x), np.deg2rad(y))
  vectors = t + x[..., None] * east + y[..., None] * north
  return radec_from_vectors(vectors)


def grid_up_angle(ra, dec, center):
  """Angle ψ from local north to the grid's up at each position (radians).

  ψ is measured from north through east, so grid up points along position
  angle ψ. Grid up at a galaxy is the grid's up at the centre (local north
  there) carried to the galaxy along the great circle joining them (parallel
  transport). That direction is also the rotation part of the projection's
  Jacobian: the gnomonic map stretches radially by 1/cos²ρ and tangentially
  by 1/cos ρ about the centre (ρ the distance from it), so directions along
  and across the great circle to the centre map onto the radial and
  tangential directions of the plane; tangential and cross shears about the
  centre are therefore unchanged. (The image of the local north itself
  deviates from this by O(ρ²) radians, and the projection's anisotropic
  stretch, a shear of about ρ²/4 = 8e-5 at ρ = 1°, is not corrected.)

  Derivation: with Δα = α − α0, the position angle of the radial direction
  (away from the centre) at the galaxy is arg(B + iA) with
  A = cos δ0 sin Δα, B = sin δ cos δ0 cos Δα − cos δ sin δ0; in the plane the
  same direction has angle arg(y + ix) from grid up, where
  x ∝ cos δ sin Δα and y ∝ cos δ0 sin δ − sin δ0 cos δ cos Δα. Parallel
  transport keeps the angle between the transported direction and the
  great circle, so ψ = arg[(B + iA)(y − ix)], which simplifies (expand and
  use sin² + cos² = 1) to

    tan ψ = sin Δα (sin δ + sin δ0) / [cos δ cos δ0 + (1 + sin δ sin δ0) cos Δα].

  This is finite everywhere but at the antipode of the centre; ψ ≈ Δα sin δ0
  near the centre (the convergence of meridians) and ψ = Δα for a centre on
  the north pole.

  Args:
    ra, dec: arrays of galaxy positions in degrees (broadcastable).
    center: (ra0, dec0) of the tangent point in degrees.

  Returns:
    ψ in radians, in (−π, π].
  """
  ra0, dec0 = as_center(center)
  d_ra = np.deg2rad(np.asarray(ra, dtype=np.float64) - ra0)
  dec = np.deg2rad(np.asarray(dec, dtype=np.float64))
  dec0 = np.deg2rad(dec0)
  sin_dec, sin_dec0 = np.sin(dec), np.sin(dec0)
  return np.arctan2(
      np.sin(d_ra) * (sin_dec + sin_dec0),
      np.cos(dec) * np.cos(dec0) + (1.0 + sin_dec * sin_dec0) * np.cos(d_ra))


def rotate_spin2(e1, e2, angle):
  """Components of a spin-2 field in a frame rotated by −``angle``.

  Returns ``e · exp(2i·angle)`` as (real, imaginary) parts: a shape whose
  major axis is at angle φ in the old frame is at φ + angle in the new one
  (angles counter-clockwise from the first axis, in radians).
  ``rotate_spin2(*rotate_spin2(e1, e2, a), -a)`` gives back (e1, e2).

  Args:
    e1, e2: arrays of the two components (dimensionless).
    angle: array of angles in radians (broadcastable with e1, e2).

  Returns:
    (e1', e2') arrays.
  """
  cos2, sin2 = np.cos(2.0 * angle), np.sin(2.0 * angle)
  return e1 * cos2 - e2 * sin2, e1 * sin2 + e2 * cos2


def to_grid_frame(e1, e2, ra, dec, center):
  """Ellipticities from each galaxy's local RA/Dec frame to the grid frame.

  The local frame has e1 along east-west and north-south, the grid frame
  along the columns and rows of a `gnomonic` grid about ``center``. Grid up
  is at position angle ψ = `grid_up_angle` from local north, so the grid's
  right is at angle −ψ from local east (counter-clockwise from east towards
  north) and ``e_grid = e_local · exp(2iψ)``.

  Args:
    e1, e2: arrays of ellipticity components in the local frames.
    ra, dec: galaxy positions in degrees.
    center: (ra0, dec0) of the grid in degrees.

  Returns:
    (e1, e2) in the grid frame.
  """
  return rotate_spin2(e1, e2, grid_up_angle(ra, dec, center))


def to_local_frame(e1, e2, ra, dec, center):
  """Ellipticities from the grid frame to each galaxy's local RA/Dec frame.

  The inverse of `to_grid_frame`: ``e_local = e_grid · exp(−2iψ)``.

  Args:
    e1, e2: arrays of ellipticity components in the grid frame.
    ra, dec: galaxy positions in degrees.
    center: (ra0, dec0) of the grid in degrees.

  Returns:
    (e1, e2) in the local frames.
  """
  return rotate_spin2(e1, e2, -grid_up_angle(ra, dec, center))

r"""Curved-sky weak lensing on HEALPix maps: convergence <-> shear (healpy).

The spherical counterparts of `lensing.shear_from_convergence` and
`lensing.kaiser_squires`, through spin-2 spherical harmonics (the
Kaiser-Squires method of the DES Y3 curved-sky mass maps). Maps are HEALPix
maps in RING ordering; κ and γ are dimensionless, angles are in arcmin.

Harmonics. With κ_ℓm the (spin-0) harmonic coefficients of κ, an E-mode
shear field has spin-2 coefficients

    E_ℓm = f_ℓ κ_ℓm,   f_ℓ = sqrt((ℓ + 2)(ℓ − 1) / (ℓ (ℓ + 1))),   B_ℓm = 0,

(f_0 = f_1 = 0: monopole and dipole of κ make no shear), and
Kaiser-Squires divides by f_ℓ: κ_E,ℓm = E_ℓm / f_ℓ, κ_B,ℓm = B_ℓm / f_ℓ
(ℓ ≥ 2; κ_E and κ_B have no monopole or dipole).

Frames and signs. The shear components follow the catalogues of
`tfp_massmap.catalog`: in each position's local frame, γ1 > 0 is elongation
east-west and γ2 > 0 along north-east (angles from east towards north, x
east and y north as in the flat grids of `sky`). healpy's polarisation
(``pol=True``, its default "COSMO" convention, not the IAU one) measures
Q and U in the basis (e_θ, e_φ) = (south, east), with angles from south
towards east: a shape at angle β from east towards north is at α = β + 90°
there, so Q + iU = |γ| e^{2iα} = −(γ1 + iγ2). With healpy's E/B transforms
the shear of κ is then

    (γ1, γ2) = −(Q, U)   of   alm2map([0, f_ℓ κ_ℓm, 0], pol=True),

and Kaiser-Squires feeds (Q, U) = −(γ1, γ2) to map2alm. (In the IAU
convention U changes sign, so there γ1 = −Q and γ2 = U.)
`tests/test_curved_sky.py` pins this against the flat-sky operator
`lensing.shear_from_convergence` on tangent-plane tiles binned by
`catalog.bin_shear_catalog` (whose spin-2 rotation is `sky.to_grid_frame`),
at the equator and at Dec 75°: the opposite sign of either component
turns the agreement into anti-correlation.
The B-mode convention is that of `lensing.kaiser_squires`: the shear
i·(γ of κ) (every ellipticity turned by 45°) has κ_B = κ and κ_E = 0.
"""

import collections

import healpy as hp
import numpy as np

from tfp_massmap import _checks

__all__ = [
    'HealpixShear',
    'healpix_shear_maps',
    'shear_from_convergence_healpix',
    'kaiser_squires_healpix',
    'spin2_factor',
]

# Jacobi iterations of healpy's map2alm: band-limited maps with lmax <= 2 NSIDE
# come back to about 1e-4 relative accuracy after 3 (healpy's default).
_MAP2ALM_ITER = 3


def spin2_factor(lmax):
  """f_ℓ = sqrt((ℓ+2)(ℓ−1)/(ℓ(ℓ+1))) for ℓ = 0..lmax (f_0 = f_1 = 0), float64."""
  ell = np.arange(int(lmax) + 1, dtype=np.float64)
  f = np.zeros_like(ell)
  high = ell >= 2
  f[high] = np.sqrt((ell[high] + 2) * (ell[high] - 1) / (ell[high] * (ell[high] + 1)))
  return f


def _check_healpix(m, name):
  """A 1-D float64 HEALPix map; returns (map, nside)."""
  m = np.asarray(m, dtype=np.float64)
  if m.ndim != 1 or not hp.isnpixok(m.size):
    raise ValueError(f'{name} must be a 1-D HEALPix map of 12 NSIDE² pixels, '
                     f'got shape {m.shape}.')
  return m, hp.npix2nside(m.size)


HealpixShear = collections.namedtuple('HealpixShear',
                                      ['gamma1', 'gamma2', 'mask', 'counts'])
HealpixShear.__doc__ = """A shear catalogue averaged on HEALPix pixels (RING).

Attributes:
  gamma1, gamma2: float64 maps of the weighted mean ellipticity per pixel in
    the pixel's local frame (0 where the pixel holds no galaxy).
  mask: float64 map, 1 where the pixel holds at least one galaxy, else 0.
  counts: int64 map of galaxies per pixel.
"""


def healpix_shear_maps(catalog, nside):
  """Averages a shear catalogue on HEALPix pixels: the input of KS on the sphere.

  Each galaxy goes to the pixel holding its position; per pixel the shear is
  Σ w_i e_i / Σ w_i per component. No rotation is needed: a catalogue's
  ellipticities are in each galaxy's local RA/Dec frame, as HEALPix shear
  maps are (to the change of local frame across a pixel, ~ pixel size ×
  tan(Dec) radians).

  Args:
    catalog: a `catalog.Catalog` (ra, dec in deg, e1, e2, weight arrays).
    nside: HEALPix NSIDE (a power of 2).

  Returns:
    A `HealpixShear`; ``kaiser_squires_healpix(m.gamma1, m.gamma2,
    mask=m.mask)`` is the curved-sky Kaiser-Squires map of the catalogue.

  Raises:
    ValueError: for a bad NSIDE, columns of different lengths, an empty
      catalogue, non-finite values or non-positive weights.
  """
  if (isinstance(nside, bool) or not isinstance(nside, (int, np.integer))
      or not hp.isnsideok(nside, nest=True)):
    raise ValueError(f'nside must be a power of 2 (a HEALPix NSIDE), got {nside!r}.')
  columns = {name: np.asarray(getattr(catalog, name), dtype=np.float64).ravel()
             for name in ('ra', 'dec', 'e1', 'e2', 'weight')}
  sizes = {name: c.size for name, c in columns.items()}
  if len(set(sizes.values())) != 1 or not sizes['ra']:
    raise ValueError(f'catalog columns must be non-empty and of one length, got '
                     f'lengths {sizes}.')
  for name, values in columns.items():
    _checks.finite(values, f'catalog {name}')
  if (columns['weight'] <= 0).any():
    raise ValueError(f'catalog weight holds {int((columns["weight"] <= 0).sum())} '
                     'value(s) <= 0; expected positive weights.')
  npix = hp.nside2npix(nside)
  pix = hp.ang2pix(nside, columns['ra'], columns['dec'], lonlat=True)
  w = columns['weight']
  counts = np.bincount(pix, minlength=npix)
  sum_w = np.bincount(pix, weights=w, minlength=npix)
  safe = np.where(counts > 0, sum_w, 1.0)
  gamma1 = np.bincount(pix, weights=w * columns['e1'], minlength=npix) / safe
  gamma2 = np.bincount(pix, weights=w * columns['e2'], minlength=npix) / safe
  return HealpixShear(gamma1=gamma1, gamma2=gamma2,
                      mask=(counts > 0).astype(np.float64), counts=counts)


def _check_lmax(lmax, nside):
  """lmax, default 3 NSIDE − 1 (healpy's); must be >= 2."""
  if lmax is None:
    return 3 * nside - 1
  return _checks.positive_int(lmax, 'lmax', minimum=2)


def shear_from_convergence_healpix(kappa_map, lmax=None):
  """Shear (γ1, γ2) of a convergence HEALPix map, on the sphere.

  Args:
    kappa_map: κ, a HEALPix map in RING ordering (dimensionless), finite
      everywhere (a full-sky field: there is no mask here).
    lmax: largest multipole of the transform; default 3 NSIDE − 1. Fields
      band-limited to lmax <= 2 NSIDE are transformed to about 1e-4.

  Returns:
    (gamma1, gamma2): float64 HEALPix maps in RING ordering, components in
    each pixel's local frame (γ1 > 0 east-west, γ2 > 0 north-east, see the
    module docstring).

  Raises:
    ValueError: if the map is not a HEALPix map, holds NaN, inf or
      hp.UNSEEN, or lmax is not an integer >= 2.
  """
  kappa, nside = _check_healpix(kappa_map, 'kappa_map')
  _checks.finite(np.where(kappa == hp.UNSEEN, np.nan, kappa), 'kappa_map')
  lmax = _check_lmax(lmax, nside)
  alm = hp.map2alm(kappa, lmax=lmax, iter=_MAP2ALM_ITER, use_pixel_weights=False)
  e_alm = hp.almxfl(alm, spin2_factor(lmax))
  zero = np.zeros_like(e_alm)
  _, q, u = hp.alm2map([zero, e_alm, zero], nside, lmax=lmax, pol=True)
  return -q, -u


def kaiser_squires_healpix(gamma1, gamma2, mask=None, lmax=None,
                           smoothing_arcmin=None):
  """Curved-sky Kaiser-Squires: HEALPix shear maps → (κ_E, κ_B).

  Args:
    gamma1, gamma2: HEALPix maps (RING ordering) of the shear in each
      pixel's local frame (dimensionless, the convention of the module
      docstring and of `catalog.Catalog`).
    mask: optional HEALPix map of the same NSIDE, 1 (or True) where the
      shear is measured and 0 elsewhere; the shear is set to 0 outside it
      before the transform (values there, NaN or hp.UNSEEN included, are
      ignored). Without a mask every pixel must be finite.
    lmax: largest multipole; default 3 NSIDE − 1.
    smoothing_arcmin: optional Gaussian smoothing standard deviation in
      arcmin (the beam exp(−ℓ(ℓ+1)σ²/2)), as in `lensing.kaiser_squires`.

  Returns:
    (kappa_e, kappa_b): float64 HEALPix maps in RING ordering, without
    monopole and dipole. Outside a mask they hold the reconstruction's
    leakage, not hp.UNSEEN; mask them as needed.

  Raises:
    ValueError: on maps of different or invalid NSIDE, a mask that is not
      0/1, non-finite shear inside the mask, or a bad lmax or smoothing.
  """
  g1, nside = _check_healpix(gamma1, 'gamma1')
  g2, nside2 = _check_healpix(gamma2, 'gamma2')
  if nside2 != nside:
    raise ValueError(f'gamma1 and gamma2 must have the same NSIDE, got {nside} '
                     f'and {nside2}.')
  if mask is not None:
    m, nside_m = _check_healpix(mask, 'mask')
    if nside_m != nside:
      raise ValueError(f'mask has NSIDE {nside_m}, expected that of the shear, '
                       f'{nside}.')
    if not np.all((m == 0) | (m == 1)):
      raise ValueError('mask must hold only 0 and 1 (or booleans), got values '
                       f'{np.unique(m)[:5]}...')
    inside = m == 1
    g1 = np.where(inside, g1, 0.0)
    g2 = np.where(inside, g2, 0.0)
  for g, name in ((g1, 'gamma1'), (g2, 'gamma2')):
    _checks.finite(np.where(g == hp.UNSEEN, np.nan, g),
                   name + ('' if mask is None else ' inside the mask'))
  lmax = _check_lmax(lmax, nside)
  _, e_alm, b_alm = hp.map2alm([np.zeros_like(g1), -g1, -g2], lmax=lmax, pol=True,
                               iter=_MAP2ALM_ITER, use_pixel_weights=False)
  f = spin2_factor(lmax)
  inverse = np.zeros_like(f)
  inverse[2:] = 1.0 / f[2:]
  if smoothing_arcmin is not None and smoothing_arcmin != 0:
    sigma = np.deg2rad(
        _checks.positive_scalar(smoothing_arcmin, 'smoothing_arcmin', 'arcmin') / 60)
    ell = np.arange(lmax + 1)
    inverse *= np.exp(-0.5 * ell * (ell + 1) * sigma**2)
  kappa_e = hp.alm2map(hp.almxfl(e_alm, inverse), nside, lmax=lmax)
  kappa_b = hp.alm2map(hp.almxfl(b_alm, inverse), nside, lmax=lmax)
  return kappa_e, kappa_b

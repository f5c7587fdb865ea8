r"""A synthetic wide-field shear survey on the sphere: truth maps and catalogue.

Convergence. `SphericalLognormalField` is the curved-sky analogue of
`lognormal.LognormalField`: a shifted lognormal field

    κ(n̂) = λ [exp(g(n̂) − σ_g² / 2) − 1]

with g a zero-mean isotropic Gaussian field on the sphere whose spectrum is
chosen so that κ has the target spectrum C_ℓ (by default the shipped
`cosmology.cosmos_convergence_cl` table with shift `cosmology.COSMOS_SHIFT`).
On the flat grid the correlation functions are FFTs of the spectra; on the
sphere they are Legendre series,

    ξ(θ) = Σ_ℓ (2ℓ + 1)/(4π) C_ℓ P_ℓ(cos θ),
    C_ℓ = 2π ∫ ξ(θ) P_ℓ(cos θ) d cos θ,

evaluated at Gauss-Legendre nodes in cos θ (2 (lmax + 1) of them) so the
second is a quadrature. As on the flat grid: ξ_g = log(1 + ξ_κ / λ²), C_g
from ξ_g, negative C_g (always at ℓ = 0 and 1, where the target has no
power) clipped to 0 with ``clipped_fraction`` reporting the latent variance
removed, and every derived quantity is that of the field sampled:
σ_g² = ξ_g(0) = Σ (2ℓ+1)/(4π) C_g,ℓ, the κ spectrum ``cl`` is the Legendre
transform of λ² (exp ξ_g − 1), the one-point skewness is
(e^{σ_g²} + 2) √(e^{σ_g²} − 1). g is drawn as harmonic coefficients up to
lmax (default 3 NSIDE − 1; the table is interpolated in log ℓ and log C_ℓ
at integer ℓ, taking its end values beyond its range as
`power_spectrum.power_spectrum_grid` does, with C_0 = C_1 = 0) and
evaluated at the HEALPix pixel centres (point values of a band-limited
field, no pixel window, as the flat grid samples its modes up to Nyquist).

Shear and galaxies. The shear is `curved_sky.shear_from_convergence_healpix`
of κ. Galaxies are placed uniformly at random (Poisson numbers) in a
footprint made of RA/Dec boxes (`Box`) and spherical caps (`Disc`), at a
given density per arcmin²; each takes the shear of the HEALPix pixel it
falls in (nearest pixel) plus Gaussian shape noise of σ_e per component,
e = γ + n (weak-shear limit: the reduced shear γ/(1 − κ) and the
non-linear addition of shear and intrinsic shape are ignored), redrawn
while |e| >= 1, in each galaxy's local RA/Dec frame (the convention of
`catalog.Catalog`), with unit weights.

``DEFAULT_FOOTPRINT`` (132 deg²) is an equatorial box of 104 deg²
plus a cap of radius 3° at Dec 78° (above Dec 70°, where meridians
converge); ``SMALL_FOOTPRINT`` is a 2° × 2° box for tests.
Angles in degrees where named ``_deg``, densities per arcmin², κ and γ
dimensionless.
"""

import collections

import healpy as hp
import numpy as np
from scipy import special

from tfp_massmap import _checks
from tfp_massmap import catalog as catalog_lib
from tfp_massmap import cosmology
from tfp_massmap import curved_sky
from tfp_massmap import lognormal
from tfp_massmap import sky

__all__ = [
    'Box',
    'Disc',
    'DEFAULT_FOOTPRINT',
    'SMALL_FOOTPRINT',
    'SphericalLognormalField',
    'SyntheticSurvey',
    'footprint_area_deg2',
    'footprint_mask',
    'in_footprint',
    'galaxy_positions',
    'shear_catalog',
    'make_synthetic_survey',
    'small_synthetic_survey',
]

_ARCMIN2_PER_SR = (180.0 * 60.0 / np.pi)**2
_DEG2_PER_SR = (180.0 / np.pi)**2


class Box(collections.namedtuple(
    'Box', ['ra_min_deg', 'ra_max_deg', 'dec_min_deg', 'dec_max_deg'])):
  """The region ra_min <= RA <= ra_max, dec_min <= Dec <= dec_max (deg).

  RA runs east from ra_min to ra_max, across RA = 0 when ra_max < ra_min.
  """
  __slots__ = ()


class Disc(collections.namedtuple('Disc', ['ra_deg', 'dec_deg', 'radius_deg'])):
  """The spherical cap within ``radius_deg`` of (ra_deg, dec_deg) (deg)."""
  __slots__ = ()


DEFAULT_FOOTPRINT = (Box(15.0, 28.0, -4.0, 4.0), Disc(120.0, 78.0, 3.0))
SMALL_FOOTPRINT = (Box(30.0, 32.0, -1.0, 1.0),)


SyntheticSurvey = collections.namedtuple(
    'SyntheticSurvey',
    ['catalog', 'kappa', 'gamma1', 'gamma2', 'mask', 'nside', 'field',
     'footprint', 'density_arcmin2', 'sigma_e'])
SyntheticSurvey.__doc__ = """A synthetic survey and its truth.

Attributes:
  catalog: the galaxies, a `catalog.Catalog` (ra, dec in deg; e1, e2 in the
    local frames; unit weights).
  kappa, gamma1, gamma2: full-sky truth HEALPix maps (RING, float64,
    dimensionless); γ in each pixel's local frame.
  mask: float64 HEALPix map, 1 at pixels whose centre is in the footprint.
  nside: NSIDE of the maps.
  field: the `SphericalLognormalField` (its spectra and moments).
  footprint: the tuple of `Box` and `Disc` regions.
  density_arcmin2: galaxies per arcmin² (the Poisson mean).
  sigma_e: shape noise per ellipticity component (dimensionless).
"""


def _legendre_rows(x, lmax):
  """Yields (ℓ, P_ℓ(x)) for ℓ = 0..lmax (upward recurrence, stable)."""
  p_prev, p = np.ones_like(x), x.copy()
  yield 0, p_prev
  if lmax >= 1:
    yield 1, p
  for ell in range(2, lmax + 1):
    p_prev, p = p, ((2 * ell - 1) * x * p - (ell - 1) * p_prev) / ell
    yield ell, p


def _xi_from_cl(cl, x):
  """ξ(x) = Σ (2ℓ+1)/(4π) C_ℓ P_ℓ(x) at x = cos θ."""
  xi = np.zeros_like(x)
  for ell, p in _legendre_rows(x, cl.size - 1):
    xi += (2 * ell + 1) / (4 * np.pi) * cl[ell] * p
  return xi


def _cl_from_xi(xi, x, w, lmax):
  """C_ℓ = 2π Σ_i w_i ξ(x_i) P_ℓ(x_i) for ℓ = 0..lmax (Gauss-Legendre)."""
  weighted = 2 * np.pi * w * xi
  return np.array([weighted @ p for _, p in _legendre_rows(x, lmax)])


def _table_cl(ell, cl, lmax):
  """The C_ℓ table interpolated (log-log) at integer ℓ = 0..lmax, C_0 = C_1 = 0."""
  ell = np.asarray(ell, dtype=np.float64)
  cl = np.asarray(cl, dtype=np.float64)
  if ell.ndim != 1 or ell.shape != cl.shape or ell.size < 2:
    raise ValueError(f'ell and cl must be 1-D arrays of the same length >= 2, got '
                     f'shapes {ell.shape} and {cl.shape}.')
  if ell[0] <= 0 or np.any(np.diff(ell) <= 0):
    raise ValueError('ell must be positive and strictly increasing.')
  if not np.all(np.isfinite(cl)) or np.any(cl <= 0):
    raise ValueError('cl must be finite and positive (it is interpolated in '
                     'log C_ell).')
  out = np.zeros(lmax + 1)
  ells = np.arange(2, lmax + 1, dtype=np.float64)
  out[2:] = np.exp(np.interp(np.log(np.clip(ells, ell[0], ell[-1])), np.log(ell),
                             np.log(cl)))
  return out


class SphericalLognormalField:
  """A shifted lognormal (or Gaussian) convergence field on a HEALPix sphere.

  #### Examples

  ```python
  field = SphericalLognormalField(cosmology.COSMOS_SHIFT, nside=512)
  kappa = field.sample(seed=1)    # HEALPix map, RING, 12 * 512**2 pixels
  field.skewness                  # one-point skewness of kappa
  ```
  """

  def __init__(self, shift, nside, lmax=None, ell=None, cl=None):
    """Does the spectral bookkeeping (numpy float64).

    Args:
      shift: the shift λ > 0 (dimensionless; κ > −λ), or None for the
        Gaussian field with the target spectrum.
      nside: HEALPix NSIDE of the sampled maps (a power of 2).
      lmax: band limit of the latent field; default 3 NSIDE − 1.
      ell, cl: a C_ℓ table (rad⁻¹, sr), given together; default the shipped
        `cosmology.cosmos_convergence_cl()`.

    Raises:
      ValueError: for a bad NSIDE, lmax, table or shift, including a shift too
        small for the spectrum (λ² <= −min ξ_κ).
    """
    if (isinstance(nside, bool) or not isinstance(nside, (int, np.integer))
        or not hp.isnsideok(nside, nest=True)):
      raise ValueError(f'nside must be a power of 2 (a HEALPix NSIDE), got {nside!r}.')
    self._nside = int(nside)
    self._lmax = (3 * self._nside - 1 if lmax is None
                  else _checks.positive_int(lmax, 'lmax', minimum=2))
    if (ell is None) != (cl is None):
      raise ValueError('ell and cl must be given together.')
    if ell is None:
      ell, cl = cosmology.cosmos_convergence_cl()
    if shift is not None:
      shift = _checks.positive_scalar(shift, 'shift')
    self._shift = shift
    target = _table_cl(ell, cl, self._lmax)
    self._cl_target = target
    if shift is None:
      self._cl_latent = target
      self._cl = target
      self._clipped_fraction = 0.0
    else:
      x, w = special.roots_legendre(2 * (self._lmax + 1))
      xi_kappa = _xi_from_cl(target, x)
      if xi_kappa.min() / shift**2 <= -1.0:
        raise ValueError(
            f'shift={shift!r} is too small for this power spectrum: the '
            'lognormal model needs shift**2 > -min(xi_kappa) = '
            f'{-xi_kappa.min():.4g}.')
      latent = _cl_from_xi(np.log1p(xi_kappa / shift**2), x, w, self._lmax)
      weights = (2 * np.arange(self._lmax + 1) + 1) / (4 * np.pi)
      negative = latent < 0
      clipped = float(-(weights * latent)[negative].sum())
      latent = np.maximum(latent, 0.0)
      self._clipped_fraction = clipped / float((weights * latent).sum())
      self._cl_latent = latent
      self._cl = _cl_from_xi(shift**2 * np.expm1(_xi_from_cl(latent, x)), x, w,
                             self._lmax)
    self._latent_variance = float(
        np.sum((2 * np.arange(self._lmax + 1) + 1) / (4 * np.pi) * self._cl_latent))

  @property
  def shift(self):
    """The shift λ (dimensionless), or None for the Gaussian field."""
    return self._shift

  @property
  def nside(self):
    return self._nside

  @property
  def lmax(self):
    return self._lmax

  @property
  def cl_target(self):
    """Target κ spectrum C_ℓ, ℓ = 0..lmax (sr), from the table."""
    return self._cl_target.copy()

  @property
  def cl_latent(self):
    """Spectrum of the latent Gaussian field g (clipped >= 0), ℓ = 0..lmax."""
    return self._cl_latent.copy()

  @property
  def cl(self):
    """κ spectrum of the sampled field, ℓ = 0..lmax (sr).

    Equals ``cl_target`` up to clipping; κ also has power beyond lmax (the
    exponential of a band-limited field is not band-limited).
    """
    return self._cl.copy()

  @property
  def latent_variance(self):
    """σ_g² = Σ (2ℓ+1)/(4π) C_g,ℓ (float)."""
    return self._latent_variance

  @property
  def variance(self):
    """One-point variance of κ, λ² (e^{σ_g²} − 1) (float)."""
    return lognormal.one_point_moments(self._shift, self._latent_variance)[0]

  @property
  def skewness(self):
    """One-point skewness (e^{σ_g²} + 2)√(e^{σ_g²} − 1); 0 if Gaussian."""
    return lognormal.one_point_moments(self._shift, self._latent_variance)[1]

  @property
  def clipped_fraction(self):
    """Negative latent variance clipped away, as a fraction of σ_g² (float)."""
    return self._clipped_fraction

  def sample(self, seed):
    """A κ HEALPix map (RING, float64) from an integer seed (numpy Generator)."""
    rng = np.random.default_rng(seed)
    ell, m = hp.Alm.getlm(self._lmax)
    z = rng.standard_normal((2, ell.size))
    amplitude = np.sqrt(self._cl_latent[ell])
    alm = amplitude * np.where(m == 0, z[0] + 0j, (z[0] + 1j * z[1]) / np.sqrt(2))
    g = hp.alm2map(alm, self._nside, lmax=self._lmax)
    if self._shift is None:
      return g
    return self._shift * np.expm1(g - 0.5 * self._latent_variance)


def _check_footprint(footprint):
  """A tuple of valid `Box` and `Disc` regions."""
  regions = tuple(footprint)
  if not regions:
    raise ValueError('footprint must hold at least one Box or Disc, got none.')
  for r in regions:
    if isinstance(r, Box):
      if not (-90 <= r.dec_min_deg < r.dec_max_deg <= 90):
        raise ValueError(f'{r} needs -90 <= dec_min_deg < dec_max_deg <= 90.')
      if not (np.isfinite(r.ra_min_deg) and np.isfinite(r.ra_max_deg)) or (
          r.ra_min_deg % 360 == r.ra_max_deg % 360):
        raise ValueError(f'{r} needs finite ra_min_deg != ra_max_deg (mod 360).')
    elif isinstance(r, Disc):
      sky.as_center((r.ra_deg, r.dec_deg))
      if not 0 < r.radius_deg < 90:
        raise ValueError(f'{r} needs 0 < radius_deg < 90.')
    else:
      raise ValueError(f'footprint regions must be Box or Disc, got {r!r}.')
  return regions


def _box_width_deg(box):
  return (box.ra_max_deg - box.ra_min_deg) % 360.0


def _region_area_deg2(region):
  if isinstance(region, Box):
    return (np.deg2rad(_box_width_deg(region)) *
            (np.sin(np.deg2rad(region.dec_max_deg)) -
             np.sin(np.deg2rad(region.dec_min_deg))) * _DEG2_PER_SR)
  return 2 * np.pi * (1 - np.cos(np.deg2rad(region.radius_deg))) * _DEG2_PER_SR


def _in_region(region, ra, dec):
  if isinstance(region, Box):
    return (((ra - region.ra_min_deg) % 360.0 <= _box_width_deg(region)) &
            (dec >= region.dec_min_deg) & (dec <= region.dec_max_deg))
  centre = sky.unit_vectors(region.ra_deg, region.dec_deg)
  return sky.unit_vectors(ra, dec) @ centre >= np.cos(np.deg2rad(region.radius_deg))


def in_footprint(footprint, ra, dec):
  """Boolean array: which positions (deg) lie in any region of the footprint."""
  regions = _check_footprint(footprint)
  ra = np.asarray(ra, dtype=np.float64)
  dec = np.asarray(dec, dtype=np.float64)
  inside = np.zeros(np.broadcast(ra, dec).shape, dtype=bool)
  for r in regions:
    inside |= _in_region(r, ra, dec)
  return inside


def footprint_area_deg2(footprint):
  """Area of the footprint in deg² (its regions must not overlap).

  Raises:
    ValueError: for invalid regions.
  """
  return float(sum(_region_area_deg2(r) for r in _check_footprint(footprint)))


def footprint_mask(footprint, nside):
  """HEALPix mask (RING, float64): 1 where the pixel centre is in the footprint."""
  regions = _check_footprint(footprint)
  mask = np.zeros(hp.nside2npix(nside))
  for r in regions:
    if isinstance(r, Box):
      candidates = hp.query_strip(nside, np.deg2rad(90 - r.dec_max_deg),
                                  np.deg2rad(90 - r.dec_min_deg), inclusive=True)
    else:
      candidates = hp.query_disc(nside, hp.ang2vec(r.ra_deg, r.dec_deg, lonlat=True),
                                 np.deg2rad(r.radius_deg), inclusive=True)
    ra, dec = hp.pix2ang(nside, candidates, lonlat=True)
    mask[candidates[_in_region(r, ra, dec)]] = 1.0
  return mask


def _uniform_in_region(region, n, rng):
  """Draws n positions (deg) uniform on the sphere within a region."""
  if isinstance(region, Box):
    ra = (region.ra_min_deg + _box_width_deg(region) * rng.random(n)) % 360.0
    lo, hi = np.sin(np.deg2rad([region.dec_min_deg, region.dec_max_deg]))
    dec = np.rad2deg(np.arcsin(lo + (hi - lo) * rng.random(n)))
    return ra, dec
  cos_r = np.cos(np.deg2rad(region.radius_deg))
  rho = np.arccos(1 - (1 - cos_r) * rng.random(n))  # Uniform in solid angle.
  phi = 2 * np.pi * rng.random(n)
  plane = np.rad2deg(np.tan(rho))  # Gnomonic radius, deg.
  return sky.inverse_gnomonic(plane * np.cos(phi), plane * np.sin(phi),
                              (region.ra_deg, region.dec_deg))


def galaxy_positions(footprint, density_arcmin2, seed):
  """Uniform random galaxy positions in a footprint.

  Each region holds a Poisson number of galaxies with mean density × its
  area; positions already inside an earlier region are dropped, so
  overlapping regions keep the density uniform.

  Args:
    footprint: sequence of `Box` and `Disc`.
    density_arcmin2: mean galaxies per arcmin² (> 0).
    seed: int seed of a numpy Generator.

  Returns:
    (ra, dec) float64 arrays in degrees, RA in [0, 360).
  """
  regions = _check_footprint(footprint)
  density = _checks.positive_scalar(density_arcmin2, 'density_arcmin2',
                                    'galaxies per arcmin²')
  rng = np.random.default_rng(seed)
  ras, decs = [], []
  for i, r in enumerate(regions):
    n = rng.poisson(density * _region_area_deg2(r) * 3600.0)
    ra, dec = _uniform_in_region(r, n, rng)
    keep = ~in_footprint(regions[:i], ra, dec) if i else np.ones(n, dtype=bool)
    ras.append(ra[keep])
    decs.append(dec[keep])
  return np.concatenate(ras), np.concatenate(decs)


def shear_catalog(ra, dec, gamma1, gamma2, sigma_e, seed):
  """Galaxies with the shear of their HEALPix pixel plus shape noise.

  Args:
    ra, dec: positions in degrees.
    gamma1, gamma2: HEALPix shear maps (RING, local frames).
    sigma_e: shape noise per component (dimensionless, 0 <= σ_e < 1); 0
      gives noiseless ellipticities e = γ.
    seed: int seed of a numpy Generator.

  Returns:
    A `catalog.Catalog` with e = γ + n (|e| < 1, n redrawn where not) and
    unit weights.
  """
  sigma_e = float(sigma_e)
  if not 0 <= sigma_e < 1:
    raise ValueError(f'sigma_e must be in [0, 1) (per-component shape noise, '
                     f'dimensionless), got {sigma_e!r}.')
  nside = hp.npix2nside(np.size(gamma1))
  pix = hp.ang2pix(nside, ra, dec, lonlat=True)
  g = np.stack([np.asarray(gamma1)[pix], np.asarray(gamma2)[pix]], -1)
  rng = np.random.default_rng(seed)
  e = g + sigma_e * rng.standard_normal(g.shape)
  redraw = np.hypot(e[:, 0], e[:, 1]) >= 1
  while redraw.any():
    e[redraw] = g[redraw] + sigma_e * rng.standard_normal((int(redraw.sum()), 2))
    redraw = np.hypot(e[:, 0], e[:, 1]) >= 1
  return catalog_lib.Catalog(ra=np.asarray(ra, np.float64),
                             dec=np.asarray(dec, np.float64),
                             e1=e[:, 0], e2=e[:, 1], weight=np.ones(len(pix)))


def make_synthetic_survey(nside=2048, footprint=DEFAULT_FOOTPRINT,
                          density_arcmin2=20.0, sigma_e=0.26,
                          shift=cosmology.COSMOS_SHIFT, lmax=None, seed=0):
  """A lognormal convergence field on the sphere, its shear and a catalogue.

  Args:
    nside: HEALPix NSIDE of the truth maps (default 2048, 1.7 arcmin
      pixels; 4096 gives 0.86 arcmin with full-sky maps of 1.6 GB each).
    footprint: sequence of `Box` and `Disc` (default ``DEFAULT_FOOTPRINT``,
      132 deg² with a cap at Dec 75°–81°).
    density_arcmin2: galaxies per arcmin² (default 20).
    sigma_e: shape noise per component (default 0.26).
    shift: lognormal shift λ, or None for a Gaussian field.
    lmax: band limit of the field; default 3 NSIDE − 1.
    seed: int; the field, the positions and the noise use seed, seed + 1 and
      seed + 2.

  Returns:
    A `SyntheticSurvey`.
  """
  regions = _check_footprint(footprint)
  field = SphericalLognormalField(shift, nside, lmax=lmax)
  kappa = field.sample(seed)
  gamma1, gamma2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=field.lmax)
  ra, dec = galaxy_positions(regions, density_arcmin2, seed + 1)
  cat = shear_catalog(ra, dec, gamma1, gamma2, sigma_e, seed + 2)
  return SyntheticSurvey(catalog=cat, kappa=kappa, gamma1=gamma1, gamma2=gamma2,
                         mask=footprint_mask(regions, nside), nside=int(nside),
                         field=field, footprint=regions,
                         density_arcmin2=float(density_arcmin2),
                         sigma_e=float(sigma_e))


def small_synthetic_survey(seed=0, nside=256, density_arcmin2=20.0,
                           sigma_e=0.26):
  """The test-sized survey: ``SMALL_FOOTPRINT`` (4 deg², ~290k galaxies).

  Same model as `make_synthetic_survey` at NSIDE 256 (13.7 arcmin pixels):
  a second or so to make.
  """
  return make_synthetic_survey(nside=nside, footprint=SMALL_FOOTPRINT,
                               density_arcmin2=density_arcmin2, sigma_e=sigma_e,
                               seed=seed)

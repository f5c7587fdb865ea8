"""The shipped cosmology constants and the datasets made from them, in one place.

The core (`demo`, the samplers' defaults) and the TFDS builders of the
top-level ``datasets/`` folder both read these; the core never imports a
builder. Angles are in arcmin; ℓ in rad⁻¹, C_ℓ in sr.

* `cosmos_convergence_cl`: the shipped ΛCDM convergence power spectrum of a
  COSMOS-like survey (``tfp_massmap/data/cl_kappa_cosmos.txt``).
* `COSMOS_SHIFT` = 0.035, the lognormal shift λ for COSMOS-like sources. In the
  lognormal model −λ is the smallest possible convergence, i.e. roughly the
  convergence of an empty beam, which is a few 10⁻² for sources at z ≈ 1–1.3
  (Hilbert, Hartlap & Schneider 2011, A&A 536, A85, who use the empty-beam
  minimum as the lognormal shift). The shift can instead be set from the
  one-point skewness (Xavier et al. 2016, MNRAS 459, 3693, from theory;
  Clerkin et al. 2017, MNRAS 466, 1444, fit lognormals to DES SV convergence
  maps), which is what is done here: within that range, λ was set so that the
  one-point skewness matches ray-traced N-body maps: κTNG maps weighted to the
  COSMOS n(z) at about 0.8 arcmin have skewness 1.9–2.6, pixel std about 0.023
  and minimum about −0.045. With the shipped C_ℓ table (pixel std 0.0235 on
  128² pixels of 0.8 arcmin) λ = 0.035 gives skewness 2.3 there (λ = 0.02 would
  give 5.1 and λ = 0.05 gives 1.5; on 360² pixels of 0.29 arcmin, pixel std
  0.0275, it gives 2.8); the floor −0.035 is a little above the N-body
  minimum, the usual compromise of a one-parameter lognormal model.

* `LOGNORMAL_KAPPA_SETTINGS`: map size, pixel scale and split sizes of the
  ``lognormal_kappa`` dataset. Each setting is built twice, as a lognormal
  (``lognormal_<N>``) and a Gaussian (``gaussian_<N>``) field; map seeds are
  0 .. n_train − 1 for train, then validation, then test, the same for both
  fields of one N.

Across cosmologies (θ = (Ωm, σ8); the other parameters stay at the fiducial
IllustrisTNG / Planck 2015 values Ωb = 0.0486, h = 0.6774, n_s = 0.9667,
Mν = 0):

* `FIDUCIAL_OMEGA_M` = 0.3089 and `FIDUCIAL_SIGMA8` = 0.8159, the cosmology of
  the shipped table; `COSMO_PARAMETER_NAMES` and `COSMO_PARAMETER_BOUNDS`, the
  prior range Ωm ∈ [0.2, 0.4], σ8 ∈ [0.6, 1.0]. Why that range: it lies inside
  the MassiveNuS design (Ωm 0.18–0.42, A_s 1.3–2.9 × 10⁻⁹, i.e. σ8 about
  0.6–1.0 near Ωm = 0.3; Liu et al. 2018), so the same prior can be trained on
  those simulations, and it is wide around what lensing measures
  (S8 = σ8 √(Ωm/0.3) ≈ 0.75–0.83 in KiDS, DES and HSC; Planck σ8 ≈ 0.81 at
  Ωm ≈ 0.31): S8 spans 0.49–1.15 over the box. Far below it maps are nearly
  Gaussian and unconstrained; far above it halofit and the lognormal model
  are untested.
* `convergence_cl(omega_m, sigma8)`: the C_ℓ of the shipped table's sources
  at any θ of that range, interpolated in a pyccl grid
  (``tfp_massmap/data/cl_kappa_grid.npz``, made by
  ``scripts/make_cl_table.py --kind=grid`` with CAMB and halofit like the
  shipped table): bilinear in (log Ωm, log σ8) of log C_ℓ between nodes 0.035
  apart in log Ωm and 0.051 in log σ8, plus a node at each fiducial value, so
  it returns the shipped table at the fiducial θ. Against pyccl at 79 cell
  centres (the worst place for a bilinear rule; every cell along three σ8
  rows and two Ωm columns) the error over 10 ≤ ℓ ≤ 1e5 has median 0.06 % and
  is below 0.09 % at every multipole but two: single multipoles (ℓ ≈ 101 at
  Ωm = 0.203, ℓ ≈ 406 at another point) reach 0.77 %, where pyccl's own C_ℓ
  jumps by 0.8 % between σ8 values 0.005 apart (noise of its Limber
  integration, in the shipped table too).
* `lognormal_shift(omega_m, sigma8)` = COSMOS_SHIFT · (Ωm / 0.3089)^0.8.
  The shift was fixed at the fiducial θ from the one-point skewness (above);
  elsewhere it follows the perturbation-theory scaling of the convergence
  skewness: at tree level S3 = ⟨κ³⟩/⟨κ²⟩² does not depend on the amplitude σ8
  and scales with the matter density roughly as Ωm^−0.8 (Bernardeau, van
  Waerbeke & Mellier 1997, A&A 322, 1). The lognormal field has
  S3 = 3/λ + σ²/λ³ (σ its pixel std; `lognormal.one_point_moments`), whose
  leading term gives λ ∝ 1/S3 ∝ Ωm^0.8, independent of σ8; the σ²/λ³ term then
  makes S3 grow with σ8 as the nonlinear corrections do in N-body maps. The
  empty-beam reading of the shift (Hilbert et al. 2011) gives nearly the same
  relation, λ ∝ Ωm for fixed sources. Over the range λ goes from 0.0247
  (Ωm = 0.2) to 0.0430 (Ωm = 0.4).
* `COSMO_KAPPA_SETTINGS`: the ``lognormal_kappa`` configs ``cosmo_<N>``, whose
  maps each have their own θ drawn uniformly over the prior range from the
  map's seed (`cosmo_kappa_parameters`), its spectrum `convergence_cl(θ)` and
  shift `lognormal_shift(θ)`.
"""

import collections
import functools
import importlib.resources
import io
import numbers

import numpy as np

__all__ = [
    'COSMO_KAPPA_SETTINGS',
    'COSMO_PARAMETER_BOUNDS',
    'COSMO_PARAMETER_NAMES',
    'COSMOS_SHIFT',
    'DatasetSetting',
    'FIDUCIAL_OMEGA_M',
    'FIDUCIAL_SIGMA8',
    'LOGNORMAL_KAPPA_SETTINGS',
    'SHIFT_OMEGA_M_EXPONENT',
    'convergence_cl',
    'convergence_cl_grid',
    'cosmo_kappa_parameters',
    'cosmo_kappa_setting',
    'cosmos_convergence_cl',
    'lognormal_kappa_setting',
    'lognormal_shift',
]

COSMOS_SHIFT = 0.035
# The cosmology of the shipped table (IllustrisTNG / Planck 2015).
FIDUCIAL_OMEGA_M = 0.3089
FIDUCIAL_SIGMA8 = 0.8159
# θ = (Ωm, σ8): names (as the dataset features) and prior range [D, 2].
COSMO_PARAMETER_NAMES = ('omega_m', 'sigma8')
COSMO_PARAMETER_BOUNDS = ((0.2, 0.4), (0.6, 1.0))
# λ ∝ Ωm^0.8: the convergence skewness S3 ∝ Ωm^−0.8 (module docstring).
SHIFT_OMEGA_M_EXPONENT = 0.8
_CL_TABLE = 'cl_kappa_cosmos.txt'
_CL_GRID = 'cl_kappa_grid.npz'


def cosmos_convergence_cl():
  """The shipped ΛCDM convergence power spectrum of a COSMOS-like survey.

  Made by ``scripts/make_cl_table.py`` (pyccl + CAMB, halofit, Planck 2015 /
  IllustrisTNG cosmology, Smail n(z) with median redshift 1.2); the file
  ``tfp_massmap/data/cl_kappa_cosmos.txt`` records the full provenance in
  its header.

  Returns:
    (ell, cl): numpy float64 arrays, multipoles in rad⁻¹ (10 to 1e5,
    log-spaced) and C_ℓ in sr.
  """
  text = importlib.resources.files('tfp_massmap').joinpath(
      'data', _CL_TABLE).read_text(encoding='utf-8')
  table = np.loadtxt(io.StringIO(text))
  return table[:, 0], table[:, 1]


class DatasetSetting(
    collections.namedtuple('DatasetSetting',
                           ['map_size', 'pixel_scale_arcmin', 'split_sizes'])):
  """One map size of a synthetic dataset.

  Attributes:
    map_size: pixels per side N.
    pixel_scale_arcmin: pixel side in arcmin.
    split_sizes: number of maps in (train, validation, test).
  """
  __slots__ = ()


LOGNORMAL_KAPPA_SETTINGS = (
    # The demo setting (1.7 deg on a side).
    DatasetSetting(128, 0.8, (4096, 512, 512)),
    # The benchmark setting of Remy et al. 2023 (1.74 deg).
    DatasetSetting(360, 0.29, (1024, 128, 128)),
    # A tiny one for tests.
    DatasetSetting(32, 0.8, (64, 16, 16)),
)


def lognormal_kappa_setting(map_size):
  """The `DatasetSetting` of the ``lognormal_kappa`` maps of size N.

  Raises:
    ValueError: when the dataset has no maps of that size (the message lists
      the sizes it has).
  """
  return _setting_of_size(LOGNORMAL_KAPPA_SETTINGS, map_size,
                          f'{map_size!r}-pixel maps', 'its map sizes are')


COSMO_KAPPA_SETTINGS = (
    # Small maps that build fast on a CPU (0.85 deg on a side).
    DatasetSetting(64, 0.8, (2048, 256, 256)),
    # The demo setting (1.7 deg on a side).
    DatasetSetting(128, 0.8, (4096, 512, 512)),
    # A tiny one for tests.
    DatasetSetting(32, 0.8, (64, 16, 16)),
)


def cosmo_kappa_setting(map_size):
  """The `DatasetSetting` of the ``lognormal_kappa`` ``cosmo_<N>`` maps.

  Raises:
    ValueError: when there are no such maps of that size (the message lists
      the sizes there are).
  """
  return _setting_of_size(
      COSMO_KAPPA_SETTINGS, map_size, f'cosmo_{map_size!r} maps',
      'the map sizes of its cosmo_<N> configs are')


def _setting_of_size(settings, map_size, missing, sizes_are):
  """The setting of ``settings`` with that map size, or a ValueError."""
  for setting in settings:
    if setting.map_size == map_size:
      return setting
  raise ValueError(f'lognormal_kappa has no {missing}; {sizes_are} '
                   f'{[s.map_size for s in settings]}.')


def _check_parameters(omega_m, sigma8):
  """(Ωm, σ8) as floats, refused outside `COSMO_PARAMETER_BOUNDS`."""
  values = []
  for name, value, (low, high) in zip(COSMO_PARAMETER_NAMES, (omega_m, sigma8),
                                      COSMO_PARAMETER_BOUNDS):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise ValueError(f'{name} must be a real number, got {value!r}.')
    if not low <= value <= high:  # Also refuses NaN.
      raise ValueError(
          f'{name}={value!r} is outside the range of the C_ell grid and of the '
          f'cosmology prior, [{low}, {high}] (cosmology.COSMO_PARAMETER_BOUNDS).')
    values.append(float(value))
  return values


@functools.lru_cache(maxsize=1)
def _cl_grid():
  data = importlib.resources.files('tfp_massmap').joinpath(
      'data', _CL_GRID).read_bytes()
  with np.load(io.BytesIO(data)) as grid:
    return (np.log(grid['omega_m']), np.log(grid['sigma8']),
            grid['ell'].astype(np.float64), grid['log_cl'].astype(np.float64))


def convergence_cl_grid():
  """The nodes `convergence_cl` interpolates between, as numpy copies.

  Returns:
    (log Ωm ``[I]``, log σ8 ``[J]``, ℓ ``[L]`` in rad⁻¹, log C_ℓ ``[I, J, L]``
    with C_ℓ in sr): the shipped pyccl grid (module docstring).
  """
  return tuple(np.array(part) for part in _cl_grid())


def _bracket(log_nodes, log_value):
  """(i, t): log_value lies at the fraction t of [log_nodes[i], log_nodes[i+1]]."""
  i = int(np.clip(np.searchsorted(log_nodes, log_value, side='right') - 1, 0,
                  log_nodes.size - 2))
  t = (log_value - log_nodes[i]) / (log_nodes[i + 1] - log_nodes[i])
  return i, float(np.clip(t, 0.0, 1.0))


def convergence_cl(omega_m, sigma8):
  """The convergence spectrum of the COSMOS-like sources at (Ωm, σ8).

  Same sources, model and multipoles as `cosmos_convergence_cl`, with Ωm and σ8
  varied (Ωb, h, n_s, Mν fixed): log C_ℓ interpolated bilinearly in
  (log Ωm, log σ8) in the shipped pyccl grid; within 0.1 % of pyccl in the
  range except where pyccl itself is noisier, and the shipped table at
  (`FIDUCIAL_OMEGA_M`, `FIDUCIAL_SIGMA8`). See the module docstring.

  Args:
    omega_m: matter density Ωm (dimensionless), in [0.2, 0.4].
    sigma8: amplitude σ8 (dimensionless), in [0.6, 1.0].

  Returns:
    (ell, cl): numpy float64 arrays, multipoles in rad⁻¹ (10 to 1e5,
    log-spaced) and C_ℓ in sr.

  Raises:
    ValueError: a parameter that is not a real number or lies outside
      `COSMO_PARAMETER_BOUNDS` (the grid does not extrapolate).
  """
  omega_m, sigma8 = _check_parameters(omega_m, sigma8)
  log_om, log_s8, ell, log_cl = _cl_grid()
  i, t = _bracket(log_om, np.log(omega_m))
  j, u = _bracket(log_s8, np.log(sigma8))
  log_c = ((1 - t) * ((1 - u) * log_cl[i, j] + u * log_cl[i, j + 1]) +
           t * ((1 - u) * log_cl[i + 1, j] + u * log_cl[i + 1, j + 1]))
  return ell.copy(), np.exp(log_c)


def lognormal_shift(omega_m, sigma8):
  """The lognormal shift λ at (Ωm, σ8): COSMOS_SHIFT · (Ωm / 0.3089)^0.8.

  λ follows the tree-level scaling of the convergence skewness, S3 ∝ Ωm^−0.8
  and independent of σ8 (module docstring); ``sigma8`` is only checked to lie
  in the prior range. Equal to `COSMOS_SHIFT` at `FIDUCIAL_OMEGA_M`.

  Args:
    omega_m: matter density Ωm (dimensionless), in [0.2, 0.4].
    sigma8: amplitude σ8 (dimensionless), in [0.6, 1.0].

  Returns:
    λ (dimensionless float).

  Raises:
    ValueError: a parameter that is not a real number or lies outside
      `COSMO_PARAMETER_BOUNDS`.
  """
  omega_m, _ = _check_parameters(omega_m, sigma8)
  return COSMOS_SHIFT * (omega_m / FIDUCIAL_OMEGA_M)**SHIFT_OMEGA_M_EXPONENT


def cosmo_kappa_parameters(seed):
  """(Ωm, σ8) of the ``cosmo_<N>`` map of integer ``seed``.

  Uniform over `COSMO_PARAMETER_BOUNDS`: with
  u = ``numpy.random.default_rng([seed, 1]).uniform(size=2)`` (a stream apart
  from the map's white noise ``default_rng(seed)``),
  Ωm = 0.2 + 0.2 u[0] and σ8 = 0.6 + 0.4 u[1].

  Args:
    seed: non-negative int, the map's seed.

  Returns:
    (omega_m, sigma8) floats.

  Raises:
    ValueError: ``seed`` is not a non-negative integer.
  """
  if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
      or seed < 0):
    raise ValueError(f'seed must be a non-negative integer, got {seed!r}.')
  u = np.random.default_rng([int(seed), 1]).uniform(size=2)
  bounds = np.asarray(COSMO_PARAMETER_BOUNDS)
  omega_m, sigma8 = bounds[:, 0] + u * (bounds[:, 1] - bounds[:, 0])
  return float(omega_m), float(sigma8)

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
"""

import collections
import importlib.resources
import io

import numpy as np

__all__ = [
    'COSMOS_SHIFT',
    'DatasetSetting',
    'LOGNORMAL_KAPPA_SETTINGS',
    'cosmos_convergence_cl',
    'lognormal_kappa_setting',
]

COSMOS_SHIFT = 0.035
_CL_TABLE = 'cl_kappa_cosmos.txt'


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
  for setting in LOGNORMAL_KAPPA_SETTINGS:
    if setting.map_size == map_size:
      return setting
  raise ValueError(
      f'lognormal_kappa has no {map_size!r}-pixel maps; its map sizes are '
      f'{[s.map_size for s in LOGNORMAL_KAPPA_SETTINGS]}.')

"""The shipped cosmology constants and the datasets made from them, in one place.

The core (`demo`, the samplers' defaults) and the TFDS builders of the
top-level ``datasets/`` folder both read these; the core never imports a
builder. Angles are in arcmin.

* `LOGNORMAL_KAPPA_SETTINGS`: map size, pixel scale and split sizes of the
  ``lognormal_kappa`` dataset. Each setting is built twice, as a lognormal
  (``lognormal_<N>``) and a Gaussian (``gaussian_<N>``) field; map seeds are
  0 .. n_train − 1 for train, then validation, then test, the same for both
  fields of one N.
"""

import collections

__all__ = [
    'DatasetSetting',
    'LOGNORMAL_KAPPA_SETTINGS',
    'lognormal_kappa_setting',
]


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

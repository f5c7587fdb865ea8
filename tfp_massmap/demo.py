"""The embedded default problem: a held-out synthetic field seen by a COSMOS-like survey.

The truth is a map of the test split of the ``lognormal_kappa`` dataset at the
demo setting (128² pixels of 0.8 arcmin, 1.7 deg on a side, config
``lognormal_128``), regenerated here from its seed without building the
dataset. The survey is ``survey.cosmos_like_survey`` (1.64 deg² tilted
footprint with star holes, 64 galaxies/arcmin², σ_e = 0.30), and the observed
shear e = Aκ + n on the unmasked pixels (0 elsewhere) is drawn by
`likelihood.ShearLikelihood.sample` (docs/design.md).
"""

import astropy.wcs
import numpy as np
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import survey

__all__ = ['DEMO_MAP_SIZE', 'DEMO_PIXEL_SCALE_ARCMIN', 'demo_problem']

DEMO_MAP_SIZE = 128
DEMO_PIXEL_SCALE_ARCMIN = 0.8
# Centre of the COSMOS field (deg, J2000), for the demo's world coordinates.
COSMOS_CENTER_DEG = (150.12, 2.21)


def demo_wcs(npix, pixel_scale_arcmin, center_deg=COSMOS_CENTER_DEG):
  """A gnomonic (TAN) WCS of an npix² grid centred on ``center_deg``.

  Column index grows with RA and row index with Dec, as in
  ``catalog.bin_shear_catalog``.
  """
  w = astropy.wcs.WCS(naxis=2)
  w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  w.wcs.crval = list(center_deg)
  w.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
  w.wcs.cdelt = [pixel_scale_arcmin / 60.0, pixel_scale_arcmin / 60.0]
  w.wcs.cunit = ['deg', 'deg']
  w.pixel_shape = (npix, npix)
  return w


def demo_problem(index=0, gaussian=False, noise_seed=0, survey_seed=0):
  """The held-out test map ``index`` observed by the COSMOS-like survey.

  Args:
    index: which test-split map (0-based) of ``lognormal_kappa/lognormal_128``
      (or ``gaussian_128`` when ``gaussian``) is the truth.
    gaussian: use the Gaussian field with the same power spectrum instead.
    noise_seed: integer seed of the shape-noise draw (the stateless seed
      ``(noise_seed, 0)`` of `ShearLikelihood.sample`).
    survey_seed: seed of the footprint (star holes) and galaxy counts.

  Returns:
    (shear_map, truth): a `shear_map.ShearMap` of float32 numpy arrays
    (shear, noise_std, mask, counts, wcs, pixel_scale_arcmin) and the true κ
    ``[N, N]`` float32.
  """
  if int(index) < 0:
    raise ValueError(f'index must be >= 0, got {index!r}.')
  n, pix = DEMO_MAP_SIZE, DEMO_PIXEL_SCALE_ARCMIN
  n_train, n_val, _ = cosmology.lognormal_kappa_setting(n).split_sizes
  field = lognormal.LognormalField(None if gaussian else cosmology.COSMOS_SHIFT,
                                   n, pix, dtype=tf.float64)
  truth = field.maps_from_seeds([n_train + n_val + int(index)])[0]
  obs = survey.cosmos_like_survey(n, pix, seed=survey_seed)
  shear = likelihood.ShearLikelihood(
      truth.astype(np.float64), obs['noise_std'].astype(np.float64),
      obs['mask']).sample(seed=(int(noise_seed), 0))
  shear_map = shear_map_lib.ShearMap(
      shear=shear.numpy().astype(np.float32), noise_std=obs['noise_std'],
      mask=obs['mask'], counts=obs['counts'], wcs=demo_wcs(n, pix),
      pixel_scale_arcmin=pix)
  return shear_map, truth

r"""Benchmark: KS, Wiener, sparse (starlet ℓ1), TV and MCALens-like MAP maps.

Synthetic fields at the demo setting (128² pixels of 0.8 arcmin): a
lognormal convergence field with the shipped COSMOS-like C_ℓ
(`tfp_massmap.lognormal`; ``--field=gaussian`` for the Gaussian field with the
same spectrum), a COSMOS-like mask and per-pixel noise
(`survey.cosmos_like_survey`, σ_e = 0.3, 64 galaxies/arcmin²) and shear
e = Aκ + n drawn by `ShearLikelihood.sample`. Each method maps the same
data; RMSE and Pearson r are computed on the mask with means removed
(docs/design.md §1, `tfp_massmap.metrics`). Wall times exclude tf.function
tracing (every method runs once on the first field before timing). The
Wiener filter and MCALens use the exact power spectrum of the simulated
field (an oracle prior).

  python benchmarks/bench_sparse.py --num_fields=4
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import metrics
from tfp_massmap import sparse
from tfp_massmap import survey
from tfp_massmap import wiener
from tfp_massmap.priors import GaussianPrior

_NUM_FIELDS = flags.DEFINE_integer('num_fields', 4, 'Number of synthetic fields.')
_SEED = flags.DEFINE_integer('seed', 0, 'Base seed (fields, surveys, noise).')
_NPIX = flags.DEFINE_integer('npix', 128, 'Map side in pixels.')
_PIXEL_SCALE = flags.DEFINE_float('pixel_scale_arcmin', 0.8,
                                  'Pixel side in arcmin.')
_FIELD = flags.DEFINE_enum('field', 'lognormal', ['lognormal', 'gaussian'],
                           'Truth model: shifted lognormal (COSMOS shift) or '
                           'the Gaussian field with the same C_ell.')
_SMOOTHING = flags.DEFINE_float('ks_smoothing_arcmin', 1.0,
                                'Gaussian smoothing of Kaiser-Squires, arcmin.')
_THRESHOLD = flags.DEFINE_float('threshold_sigma', 3.0,
                                'k of the k sigma_j starlet thresholds.')
_REGULARISATION = flags.DEFINE_float(
    'tv_regularisation', 1.0, 'TV weight in units of the propagated pixel noise.')


def _methods(prior):
  pix = _PIXEL_SCALE.value
  return {
      'KS (1\' smoothing)': lambda e, s, m: lensing.kaiser_squires(
          e, smoothing_arcmin=_SMOOTHING.value, pixel_scale_arcmin=pix)[0],
      'Wiener': lambda e, s, m: wiener.wiener_filter(e, s, m, prior, tol=1e-5)[0],
      'sparse (starlet l1)': lambda e, s, m: sparse.sparse_map(
          e, s, m, threshold_sigma=_THRESHOLD.value)[0],
      'TV': lambda e, s, m: sparse.tv_map(
          e, s, m, regularisation=_REGULARISATION.value)[0],
      'MCALens-like': lambda e, s, m: sparse.mcalens_map(
          e, s, m, prior, threshold_sigma=_THRESHOLD.value)[0],
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  n, pix, seed = _NPIX.value, _PIXEL_SCALE.value, _SEED.value
  shift = cosmology.COSMOS_SHIFT if _FIELD.value == 'lognormal' else None
  field = lognormal.LognormalField(shift=shift, map_size=n,
                                   pixel_scale_arcmin=pix)
  prior = GaussianPrior(tf.constant(field.power_grid, tf.float32))
  methods = _methods(prior)
  truths = field.sample(_NUM_FIELDS.value, seed=[seed, 1]).numpy()
  print(f'{_FIELD.value} truth, pixel std {truths.std():.4f}, '
        f'{_NUM_FIELDS.value} fields of {n}² x {pix} arcmin')
  results = {name: {'rmse': [], 'r': [], 'seconds': []} for name in methods}
  for i, truth in enumerate(truths):
    footprint = survey.cosmos_like_survey(npix=n, pixel_scale_arcmin=pix,
                                          seed=seed + i)
    mask, std = footprint['mask'], footprint['noise_std']
    shear = likelihood.ShearLikelihood(truth, std, mask).sample(
        seed=[seed + i, 2]).numpy()
    for name, method in methods.items():
      if i == 0:
        method(shear, std, mask)  # Trace once, untimed.
      start = time.perf_counter()
      estimate = np.asarray(method(shear, std, mask))
      results[name]['seconds'].append(time.perf_counter() - start)
      results[name]['rmse'].append(metrics.rmse(truth, estimate, mask))
      results[name]['r'].append(metrics.pearson_r(truth, estimate, mask))
    print(f'field {i}: ' + ', '.join(
        f'{name} {results[name]["rmse"][-1]:.5f}' for name in methods), flush=True)

  def mean_std(values, fmt):
    return f'{np.mean(values):{fmt}} ± {np.std(values):{fmt}}'

  print('\n| method | RMSE | Pearson r | time per map (s) |')
  print('|---|---|---|---|')
  for name, res in results.items():
    print(f'| {name} | {mean_std(res["rmse"], ".5f")} | '
          f'{mean_std(res["r"], ".3f")} | {np.mean(res["seconds"]):.2f} |')


if __name__ == '__main__':
  app.run(main)

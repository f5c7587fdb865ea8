r"""Validates a trained score-network prior on held-out synthetic maps.

For each noise level σ it reports, on maps of the validation split of
``lognormal_kappa/lognormal_128`` (regenerated from their seeds):

* the denoising MSE of the learned denoiser r(x + σu, σ) and of the linear
  Wiener denoiser with the same κ power spectrum (GaussianPrior.denoise);
  the learned one must be lower at every σ;
* optionally (``--mmse_maps`` > 0) the MSE of the exact lognormal MMSE
  denoiser, the posterior mean of `lognormal_posterior` with the identity
  operator, on the first few maps: the gap is what the prior can still gain;
* on maps of ``gaussian_128``, the relative L2 error of a network's score
  against the analytic Gaussian score: of ``--gaussian_prior_path``, a
  network trained on the Gaussian config (the check of score matching
  itself), else of the evaluated network (then it measures how far its prior
  is from the Gaussian one). The error is given on whole maps and without a
  border of ``--border`` pixels: the test maps are periodic, which the
  analytic score knows and a zero-padded network cannot.

Example:
  python benchmarks/bench_prior_validation.py --sigmas=0.005,0.02,0.08 \
      --num_maps=32 --mmse_maps=2 \
      --gaussian_prior_path=/work/runs/prior_gaussian_128/score_network.keras
"""

import json
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap.priors import gaussian as gaussian_prior
from tfp_massmap import lognormal
from tfp_massmap import priors
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb

flags.DEFINE_string('prior_path', None, '.keras score network (default: the shipped prior).')
flags.DEFINE_list('sigmas', ['0.005', '0.02', '0.08'],
                  'Noise std levels (dimensionless convergence).')
flags.DEFINE_integer('num_maps', 32, 'Held-out maps per σ.')
flags.DEFINE_integer('mmse_maps', 0,
                     'Maps on which to run the exact lognormal MMSE denoiser (HMC).')
flags.DEFINE_integer('mmse_chains', 4, 'HMC chains per map for the MMSE denoiser.')
flags.DEFINE_integer('mmse_results', 200, 'HMC results per chain after burn-in.')
flags.DEFINE_integer('mmse_burnin', 200, 'HMC burn-in steps.')
flags.DEFINE_string('gaussian_prior_path', None,
                    '.keras network trained on gaussian_128 for the score check '
                    '(default: the evaluated network).')
flags.DEFINE_integer('border', 4, 'Pixels left out at each edge for the interior score error.')
flags.DEFINE_integer('seed', 0, 'Seed of the denoising noise.')
flags.DEFINE_string('output', None, 'Optional JSON file for the results.')

FLAGS = flags.FLAGS


def _held_out(kind, num_maps):
  """First ``num_maps`` validation-split maps of ``{kind}_128`` and the field."""
  config = lkb.Builder.builder_configs[f'{kind}_128']
  field = lognormal.LognormalField(config.shift, config.map_size,
                                   config.pixel_scale_arcmin, dtype=tf.float64)
  first = config.split_sizes[0]
  return field.maps_from_seeds(range(first, first + num_maps)), field


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  net = priors.load_prior(FLAGS.prior_path or 'lognormal_128')
  sigmas = [float(s) for s in FLAGS.sigmas]
  rng = np.random.default_rng(FLAGS.seed)
  maps, field = _held_out('lognormal', FLAGS.num_maps)
  n, pix = field.map_size, field.pixel_scale_arcmin
  wiener = gaussian_prior.GaussianPrior(tf.cast(field.power_grid, tf.float32))
  rows = []
  for sigma in sigmas:
    noisy = (maps + sigma * rng.standard_normal(maps.shape)).astype(np.float32)
    start = time.perf_counter()
    learned = net.denoise(noisy, sigma).numpy()
    seconds = time.perf_counter() - start
    linear = wiener.denoise(noisy, sigma).numpy()
    row = {'sigma': sigma,
           'mse_learned': float(np.mean((learned - maps)**2)),
           'mse_wiener': float(np.mean((linear - maps)**2)),
           'mse_noisy': float(np.mean((noisy - maps)**2)),
           'denoise_seconds_per_map': seconds / len(maps)}
    row['learned_over_wiener'] = row['mse_learned'] / row['mse_wiener']
    if FLAGS.mmse_maps:
      from tfp_massmap import likelihood  # pylint: disable=g-import-not-at-top
      from tfp_massmap import lognormal_posterior  # pylint: disable=g-import-not-at-top
      k = FLAGS.mmse_maps
      means = []
      for i in range(k):
        result = lognormal_posterior.lognormal_posterior(
            noisy[i][..., None].astype(np.float64),
            np.full((n, n), sigma), np.ones((n, n)), field,
            operator=likelihood.identity_operator,
            num_chains=FLAGS.mmse_chains, num_results=FLAGS.mmse_results,
            num_burnin_steps=FLAGS.mmse_burnin, seed=(FLAGS.seed, i),
            progress=False)
        means.append(np.asarray(result.mean))
      means = np.stack(means)
      row['mmse_maps'] = k
      row['mse_exact_mmse'] = float(np.mean((means - maps[:k])**2))
      row['mse_learned_same_maps'] = float(np.mean((learned[:k] - maps[:k])**2))
      row['mse_wiener_same_maps'] = float(np.mean((linear[:k] - maps[:k])**2))
      row['learned_over_exact'] = row['mse_learned_same_maps'] / row['mse_exact_mmse']
    rows.append(row)
    print(json.dumps(row))

  gaussian_maps, gfield = _held_out('gaussian', FLAGS.num_maps)
  analytic = gaussian_prior.GaussianPrior(tf.cast(gfield.power_grid, tf.float32))
  gnet = (priors.load_prior(FLAGS.gaussian_prior_path)
          if FLAGS.gaussian_prior_path else net)
  inner = slice(FLAGS.border, n - FLAGS.border)
  score_rows = []
  for sigma in sigmas:
    noisy = (gaussian_maps + sigma * rng.standard_normal(gaussian_maps.shape)).astype(np.float32)
    s_net = gnet.score(noisy, sigma).numpy()
    s_true = analytic.score(noisy, sigma).numpy()
    err = float(np.linalg.norm(s_net - s_true) / np.linalg.norm(s_true))
    diff, ref = (s_net - s_true)[:, inner, inner], s_true[:, inner, inner]
    score_rows.append({'sigma': sigma, 'relative_l2_score_error_gaussian': err,
                       'relative_l2_score_error_gaussian_interior':
                           float(np.linalg.norm(diff) / np.linalg.norm(ref))})
    print(json.dumps(score_rows[-1]))
  result = {'map_size': n, 'pixel_scale_arcmin': pix, 'num_maps': FLAGS.num_maps,
            'denoising': rows, 'gaussian_score': score_rows,
            'gaussian_prior_path': FLAGS.gaussian_prior_path, 'border': FLAGS.border}
  if FLAGS.output:
    with open(FLAGS.output, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)

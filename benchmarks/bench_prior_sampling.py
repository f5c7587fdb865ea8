r"""Does annealed HMC draw the prior it is given? Samples with no data.

Two checks of the sampler settings on a score-network prior (the shipped one
by default), both at the demo setting (128² pixels of 0.8 arcmin):

* prior draws: `sample_posterior` with shear noise so large (1e3 per pixel)
  that the data carry no information, for each sampler setting in
  ``--settings`` (levels x leapfrog steps x step-size factor); the pixel
  std, skewness and band powers of the draws are compared with fresh maps of
  the lognormal field the prior was trained on (ratio 1 = right);
* stability at a fixed noise level: chains started on true maps plus noise
  of std σ, HMC on the prior score alone at that σ for ``--fixed_steps``
  transitions; the pixel std at the end should stay near √(std² + σ²).

Example:
  python benchmarks/bench_prior_sampling.py --settings=20x3x1.0,40x5x1.0,30x3x0.5
"""

import json

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import cosmology
from tfp_massmap import lognormal
from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import score_network
from tfp_massmap import shear_map
from tfp_massmap.mcmc import AnnealedHamiltonianMonteCarlo
from tfp_massmap.mcmc import ConstantSchedule
from tfp_massmap.mcmc import GeometricSchedule

flags.DEFINE_string('prior_path', None, '.keras score network (default: the shipped prior).')
flags.DEFINE_list('settings', ['20x3x1.0', '40x5x1.0', '30x3x0.5'],
                  'Sampler settings LEVELSxLEAPFROGxFACTOR (geometric σ from 0.1 to 1e-3).')
flags.DEFINE_integer('num_draws', 16, 'Prior draws (chains) per setting.')
flags.DEFINE_list('fixed_sigmas', ['0.001', '0.01', '0.03'],
                  'Noise levels of the fixed-σ stability check (dimensionless).')
flags.DEFINE_list('fixed_factors', ['1.0', '0.5'], 'Step-size factors of the stability check.')
flags.DEFINE_integer('fixed_steps', 40, 'Transitions (3 leapfrog steps each) at fixed σ.')
flags.DEFINE_integer('fixed_chains', 8, 'Chains of the stability check.')
flags.DEFINE_string('output', None, 'Optional JSON file for the results.')

FLAGS = flags.FLAGS

# Band edges in cycles per pixel (0.5 = Nyquist).
_BANDS = ((0.01, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.35), (0.35, 0.71))


def _statistics(maps):
  """Pixel std, skewness and mean power in _BANDS of maps [M, N, N]."""
  maps = np.asarray(maps, np.float64)
  maps = maps - maps.mean(axis=(1, 2), keepdims=True)
  n = maps.shape[-1]
  power = np.abs(np.fft.fft2(maps))**2
  k = np.fft.fftfreq(n)
  radius = np.hypot(*np.meshgrid(k, k, indexing='ij'))
  bands = [float(power[:, (radius >= lo) & (radius < hi)].mean()) for lo, hi in _BANDS]
  std = float(maps.std())
  return {'std': std, 'skewness': float((maps**3).mean() / std**3), 'band_power': bands}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  prior = (score_network.load_score_network(FLAGS.prior_path) if FLAGS.prior_path
           else priors.load_prior())
  n, pix = 128, 0.8
  field = lognormal.LognormalField(cosmology.COSMOS_SHIFT, n, pix, dtype=tf.float64)
  # Seeds far from the dataset's splits (0-5119).
  truth = np.asarray(field.maps_from_seeds(range(10_000, 10_000 + FLAGS.num_draws)))
  reference = _statistics(truth)
  results = {'reference': reference, 'prior_draws': [], 'fixed_sigma': []}
  print('reference maps:', json.dumps(reference))
  no_data = shear_map.ShearMap(np.zeros([n, n, 2], np.float32),
                               np.full([n, n], 1e3, np.float32),
                               pixel_scale_arcmin=pix)
  for setting in FLAGS.settings:
    levels, leapfrog, factor = setting.split('x')
    result = posterior.sample_posterior(
        no_data, prior, num_samples=FLAGS.num_draws,
        schedule=GeometricSchedule(0.1, 1e-3, int(levels)),
        num_leapfrog_steps=int(leapfrog), step_size_factor=float(factor),
        seed=(5, 5), progress=False)
    stats = _statistics(result.samples)
    row = {'setting': setting,
           'score_evaluations_per_sample': result.diagnostics['score_evaluations_per_sample'],
           'std_ratio': stats['std'] / reference['std'],
           'skewness': stats['skewness'],
           'band_power_ratio': [a / b for a, b in zip(stats['band_power'],
                                                       reference['band_power'])]}
    results['prior_draws'].append(row)
    print(json.dumps(row), flush=True)

  start = truth[:FLAGS.fixed_chains].astype(np.float32)
  rng = np.random.default_rng(0)
  for factor in (float(f) for f in FLAGS.fixed_factors):
    for sigma in (float(s) for s in FLAGS.fixed_sigmas):
      kernel = AnnealedHamiltonianMonteCarlo(
          prior.score, ConstantSchedule(sigma, FLAGS.fixed_steps), factor, 3)
      x0 = tf.constant(start + sigma * rng.standard_normal(start.shape).astype(np.float32))
      states = tf.function(lambda x, k=kernel: tfp.mcmc.sample_chain(
          FLAGS.fixed_steps, x, kernel=k, trace_fn=None, seed=(1, 2)),
                           autograph=False)(x0).numpy()
      row = {'step_size_factor': factor, 'sigma': sigma,
             'final_std': float(states[-1].std()),
             'expected_std': float(np.sqrt(start.var() + sigma**2)),
             'final_max': float(states[-1].max()), 'true_max': float(start.max())}
      results['fixed_sigma'].append(row)
      print(json.dumps(row), flush=True)
  if FLAGS.output:
    with open(FLAGS.output, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)

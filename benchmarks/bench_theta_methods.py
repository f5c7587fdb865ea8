r"""The two θ samplers of `theta_posterior` on one map: agreement and cost.

For held-out maps of the ``lognormal_kappa`` cosmo generator (seeds from
``--first_seed``; 0.8-arcmin pixels, white shape noise of ``--galaxy_density``
on every pixel), draws p(θ | γ) with the quadrature sampler
(``method='grid'``) and with TFP's HMC (``method='hmc'``) under the same joint
prior, and prints per map and size: each method's mean and std of every
parameter, the difference of the means in units of the grid's std, the
ratio of the stds, the wall time and the field-likelihood calls (network
calls: per map for the grid, per chain for HMC, with gradients).

Joint prior: ``--prior=cosmo_joint_32`` (the shipped learned prior, default)
or ``--conditional_network`` and ``--ratio_network`` files.

  python benchmarks/bench_theta_methods.py --map_sizes=32,128 --num_maps=2
"""

import time

from absl import app
from absl import flags
import numpy as np

from tfp_massmap import priors
from tfp_massmap import survey
from tfp_massmap import testing
from tfp_massmap import theta_posterior

flags.DEFINE_list('map_sizes', ['32', '128'], 'Map sides N [pixels].')
flags.DEFINE_integer('num_maps', 2, 'Maps per size.')
flags.DEFINE_integer('first_seed', 1_000_000, 'Seed of the first map.')
flags.DEFINE_float('galaxy_density', survey.COSMOS_GALAXY_DENSITY,
                   'Galaxies per arcmin² (σ_pix = σ_e / √(n · 0.64 '
                   'arcmin²)).')
flags.DEFINE_float('sigma_e', survey.COSMOS_SIGMA_E,
                   'Shape noise per component.')
flags.DEFINE_integer('grid_samples', 400, 'Grid draws per map.')
flags.DEFINE_integer('hmc_chains', 16, 'HMC chains per map (one draw each).')
flags.DEFINE_string('prior', 'cosmo_joint_32', 'A shipped joint prior.')
flags.DEFINE_string('conditional_network', None, 'Or: a conditioned '
                    'ScoreNetwork .keras file (with --ratio_network).')
flags.DEFINE_string('ratio_network', None, 'Its RatioNetwork .keras file.')
FLAGS = flags.FLAGS

PIXEL_SCALE_ARCMIN = 0.8


def main(argv):
  del argv
  if FLAGS.conditional_network:
    joint = priors.LearnedJointPrior(FLAGS.conditional_network,
                                     ratio=FLAGS.ratio_network)
  else:
    joint = priors.load_prior(FLAGS.prior)
  noise = FLAGS.sigma_e / np.sqrt(FLAGS.galaxy_density * PIXEL_SCALE_ARCMIN**2)
  print(f'σ_pix = {noise:.4f}; grid {FLAGS.grid_samples} draws, HMC '
        f'{FLAGS.hmc_chains} chains')
  print('| N | seed | truth (Ωm, σ8) | grid mean ± std | HMC mean ± std | '
        '(HMC − grid) mean / grid std | HMC std / grid std | grid s (calls) | '
        'HMC s (calls per chain) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for n in (int(v) for v in FLAGS.map_sizes):
    for i in range(FLAGS.num_maps):
      seed = FLAGS.first_seed + i
      truth, _, data = testing.cosmo_problem(seed, n, PIXEL_SCALE_ARCMIN,
                                             noise, (seed, 1))
      out = {}
      for method, count in (('grid', FLAGS.grid_samples),
                            ('hmc', FLAGS.hmc_chains)):
        began = time.perf_counter()
        theta, diagnostics = theta_posterior.sample_theta_posterior(
            data, joint, num_samples=count, seed=(seed, 2), method=method)
        theta = theta.numpy().astype(np.float64)
        out[method] = (theta.mean(axis=0), theta.std(axis=0),
                       time.perf_counter() - began,
                       diagnostics['log_likelihood_evaluations'])
      (gm, gs, gt, gc), (hm, hs, ht, hc) = out['grid'], out['hmc']

      def pair(values, digits=3):
        return ', '.join(f'{v:.{digits}f}' for v in values)
      print(f'| {n} | {seed} | {pair(truth)} | {pair(gm)} ± {pair(gs)} | '
            f'{pair(hm)} ± {pair(hs)} | {pair((hm - gm) / gs, 2)} | '
            f'{pair(hs / gs, 2)} | {gt:.1f} ({gc}) | {ht:.1f} ({hc}) |',
            flush=True)


if __name__ == '__main__':
  app.run(main)

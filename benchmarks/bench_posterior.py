r"""Benchmark of the mass-mapping estimators on held-out synthetic maps.

The benchmark protocol of DESIGN.md §5 at the demo setting: held-out test
maps of ``lognormal_kappa/lognormal_128`` (128² pixels of 0.8 arcmin) seen by
the COSMOS-like survey (`demo.demo_problem`), RMSE and Pearson r on the mask
(means removed) for each estimator, all measured in one run:

* Kaiser-Squires with 1 arcmin smoothing, the Wiener filter (Gaussian prior
  with the field's own κ spectrum), optionally the sparse, TV and MCALens-like
  MAP maps (``--classical``);
* the exact lognormal posterior mean (`lognormal_posterior`, the Bayes limit;
  ``--exact_chains`` > 0);
* the annealed-HMC posterior under the learned prior (the shipped one or
  ``--prior_path``): mean, 68/95% coverage, score evaluations and seconds per
  sample.

Example:

  python benchmarks/bench_posterior.py --num_maps=20 --num_samples=16 \
      --exact_chains=2 --output=out/bench_posterior.json
"""

import json
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import demo
from tfp_massmap import gaussian_prior
from tfp_massmap import lensing
from tfp_massmap import lognormal
from tfp_massmap import metrics
from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import score_network
from tfp_massmap import sparse
from tfp_massmap import wiener

flags.DEFINE_integer('num_maps', 20, 'Held-out test maps.')
flags.DEFINE_integer('first_map', 0, 'Index of the first test map.')
flags.DEFINE_string('prior_path', None, '.keras score network (default: the shipped prior).')
flags.DEFINE_integer('num_samples', 16, 'Posterior samples (annealed chains) per map.')
flags.DEFINE_integer('num_levels', None, 'Annealing levels (default: sample_posterior).')
flags.DEFINE_integer('num_leapfrog_steps', None, 'Leapfrog steps (default: sample_posterior).')
flags.DEFINE_float('step_size_factor', None, 'Leapfrog step / σ (default: sample_posterior).')
flags.DEFINE_bool('learned', True, 'Run the learned-prior posterior.')
flags.DEFINE_list('merge', [],
                  'Per-map JSON files (--output) of other runs on the same maps whose '
                  'estimators are added to the table.')
flags.DEFINE_integer('exact_chains', 0,
                     'HMC chains of the exact lognormal posterior per map (0: skip).')
flags.DEFINE_integer('exact_results', 200, 'Exact-posterior results per chain.')
flags.DEFINE_integer('exact_burnin', 300, 'Exact-posterior burn-in steps.')
flags.DEFINE_bool('classical', False, 'Also run the sparse, TV and MCALens-like maps.')
flags.DEFINE_string('output', None, 'Optional JSON file for per-map results.')

FLAGS = flags.FLAGS


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return np.asarray(out), time.perf_counter() - start


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  prior = (score_network.load_score_network(FLAGS.prior_path) if FLAGS.prior_path
           else priors.load_prior())
  n, pix = demo.DEMO_MAP_SIZE, demo.DEMO_PIXEL_SCALE_ARCMIN
  field = lognormal.LognormalField(lognormal.COSMOS_SHIFT, n, pix, dtype=tf.float64)
  gauss = gaussian_prior.GaussianPrior(tf.constant(field.power_grid, tf.float64))
  rows = []
  for index in range(FLAGS.first_map, FLAGS.first_map + FLAGS.num_maps):
    shear_map, truth = demo.demo_problem(index=index, noise_seed=index)
    mask = shear_map.mask
    shear64 = tf.constant(shear_map.shear, tf.float64)
    noise64 = tf.constant(shear_map.noise_std, tf.float64)
    mask64 = tf.constant(mask, tf.float64)
    maps, seconds = {}, {}
    maps['ks'], seconds['ks'] = _timed(lambda: lensing.kaiser_squires(
        shear_map.shear, smoothing_arcmin=1.0, pixel_scale_arcmin=pix)[0])
    maps['wiener'], seconds['wiener'] = _timed(
        lambda: wiener.wiener_filter(shear64, noise64, mask64, gauss)[0])
    if FLAGS.classical:
      maps['sparse'], seconds['sparse'] = _timed(
          lambda: sparse.sparse_map(shear64, noise64, mask64)[0])
      maps['tv'], seconds['tv'] = _timed(
          lambda: sparse.tv_map(shear64, noise64, mask64)[0])
      maps['mcalens'], seconds['mcalens'] = _timed(
          lambda: sparse.mcalens_map(shear64, noise64, mask64, gauss)[0])
    row = {'index': index}
    if FLAGS.exact_chains:
      from tfp_massmap import lognormal_posterior  # pylint: disable=g-import-not-at-top
      start = time.perf_counter()
      exact = lognormal_posterior.lognormal_posterior(
          shear64, noise64, mask64, field, num_chains=FLAGS.exact_chains,
          num_results=FLAGS.exact_results, num_burnin_steps=FLAGS.exact_burnin,
          seed=(index, 7), progress=False)
      maps['exact_lognormal'] = np.asarray(exact.mean)
      seconds['exact_lognormal'] = time.perf_counter() - start
    if FLAGS.learned:
      options = {} if FLAGS.step_size_factor is None else {
          'step_size_factor': FLAGS.step_size_factor}
      result = posterior.sample_posterior(
          shear_map, prior=prior, num_samples=FLAGS.num_samples,
          num_levels=FLAGS.num_levels, num_leapfrog_steps=FLAGS.num_leapfrog_steps,
          seed=(index, 3), progress=False, **options)
      maps['learned_posterior'] = np.asarray(result.mean)
      seconds['learned_posterior'] = result.diagnostics['wall_time_s']
      for level in ('68', '95'):
        lower, upper = (np.asarray(v) for v in getattr(result, f'interval_{level}'))
        row[f'coverage_{level}'] = metrics.coverage(truth, lower, upper, mask)
      row['score_evaluations_per_sample'] = int(
          result.diagnostics['score_evaluations_per_sample'])
      row['seconds_per_sample'] = float(result.diagnostics['wall_time_per_sample_s'])
      # The mean of S samples has E|mean - truth|² = (posterior mean's MSE)
      # + (posterior variance)/S: this term is removed to extrapolate S → ∞.
      variance = np.var(np.asarray(result.samples, np.float64), axis=0, ddof=1)
      row['finite_sample_mse'] = float(variance[mask > 0].mean() / FLAGS.num_samples)
      row['posterior_std_learned'] = float(np.sqrt(variance[mask > 0].mean()))
    for name, kappa in maps.items():
      row[f'rmse_{name}'] = float(metrics.rmse(truth, kappa, mask))
      row[f'r_{name}'] = float(metrics.pearson_r(truth, kappa, mask))
      row[f'seconds_{name}'] = float(seconds[name])
    rows.append(row)
    print(json.dumps(row), flush=True)
    if FLAGS.output:  # After each map: a stopped run keeps its maps.
      with open(FLAGS.output, 'w', encoding='utf-8') as f:
        json.dump(rows, f, indent=2)
  for path in FLAGS.merge:
    with open(path, encoding='utf-8') as f:
      other = {r['index']: r for r in json.load(f)}
    for row in rows:
      for key, value in other[row['index']].items():
        row.setdefault(key, value)
  _print_table(rows)


def _mean_se(values):
  values = np.asarray(values, np.float64)
  se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.
  return f'{values.mean():.3f} ± {se:.3f}'


def _print_table(rows):
  """Markdown table of RMSE, r and time per estimator (means over maps)."""
  names = [k[5:] for k in rows[0] if k.startswith('rmse_')]
  print(f'\n{len(rows)} maps')
  print('| estimator | RMSE (mean ± s.e.) | Pearson r | RMSE / Wiener | seconds per map |')
  print('|---|---|---|---|---|')
  wiener_rmse = np.array([r['rmse_wiener'] for r in rows])
  for name in names:
    rmse = np.array([r[f'rmse_{name}'] for r in rows])
    corr = np.array([r[f'r_{name}'] for r in rows])
    secs = np.mean([r[f'seconds_{name}'] for r in rows])
    print(f'| {name} | {rmse.mean():.5f} ± {rmse.std(ddof=1) / np.sqrt(len(rmse)) if len(rmse) > 1 else 0:.5f} '
          f'| {corr.mean():.3f} | {_mean_se(rmse / wiener_rmse)} | {secs:.2f} |')
  if 'rmse_learned_posterior' in rows[0]:
    learned = np.array([r['rmse_learned_posterior'] for r in rows])
    limit = np.sqrt(np.maximum(
        learned**2 - np.array([r['finite_sample_mse'] for r in rows]), 0.))
    print(f'learned posterior mean, S → ∞ (finite-sample term removed): RMSE / Wiener '
          f'{_mean_se(limit / wiener_rmse)}')
    if 'rmse_exact_lognormal' in rows[0]:
      exact = np.array([r['rmse_exact_lognormal'] for r in rows])
      print(f'learned / exact RMSE: {_mean_se(learned / exact)}; S → ∞: '
            f'{_mean_se(limit / exact)}')
    for key in ('coverage_68', 'coverage_95', 'score_evaluations_per_sample',
                'seconds_per_sample', 'posterior_std_learned'):
      print(f'{key}: {np.mean([r[key] for r in rows]):.4g}')


if __name__ == '__main__':
  app.run(main)

r"""Benchmark of the mass-mapping estimators on held-out synthetic maps.

The benchmark protocol of docs/design.md §6 at the demo setting: held-out test
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

The estimators run through `tfp_massmap.pipeline` (the main job's registry).

Example:
  python benchmarks/bench_posterior.py --num_maps=20 --num_samples=16 \
      --exact_chains=2 --output=out/bench_posterior.json
"""

import dataclasses
import json
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import demo
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import pipeline
from tfp_massmap import priors
from tfp_massmap import wiener
from tfp_massmap.shear_map import as_shear_map
from tfp_massmap.mcmc import GeometricSchedule

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
flags.DEFINE_float('truth_lmax', None,
                   'Optional: remove the truth\'s Fourier modes above this multipole '
                   '[rad^-1] before observing it (same noise seed): a universe with '
                   'less small-scale power than the prior, e.g. 6143 like the '
                   'NSIDE 2048 synthetic survey.')
flags.DEFINE_string('samples_dir', None,
                    'Optional folder for one .npz per map: truth, mask, noise_std, the '
                    'KS and Wiener maps, the learned-posterior samples and as many exact '
                    'Gaussian-posterior (Wiener) samples; read by '
                    'benchmarks/bench_statistics.py.')

FLAGS = flags.FLAGS

# Row names of the pipeline's estimators (those of earlier --output files).
_ROW_NAMES = {'posterior': 'learned_posterior'}


def _options(prior, field, gauss):
  """The pipeline's options for the flags (per-map seeds set in main)."""
  options = dict(gaussian_prior=gauss, prior=prior, num_samples=FLAGS.num_samples,
                 num_leapfrog_steps=FLAGS.num_leapfrog_steps,
                 lognormal_field=field, exact_chains=FLAGS.exact_chains,
                 exact_results=FLAGS.exact_results,
                 exact_burnin=FLAGS.exact_burnin)
  if FLAGS.num_levels is not None:
    options['schedule'] = GeometricSchedule(0.1, 1e-3, FLAGS.num_levels)
  if FLAGS.step_size_factor is not None:
    options['step_size_factor'] = FLAGS.step_size_factor
  return pipeline.EstimatorOptions(**options)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  prior = priors.load_prior(FLAGS.prior_path or 'lognormal_128')
  n, pix = demo.DEMO_MAP_SIZE, demo.DEMO_PIXEL_SCALE_ARCMIN
  field = lognormal.LognormalField(cosmology.COSMOS_SHIFT, n, pix, dtype=tf.float64)
  gauss = priors.GaussianPrior(tf.constant(field.power_grid, tf.float64),
                               pixel_scale_arcmin=pix)
  methods = ['ks', 'wiener']
  if FLAGS.classical:
    methods += ['sparse', 'tv', 'mcalens']
  if FLAGS.exact_chains:
    methods.append('exact_lognormal')
  if FLAGS.learned:
    methods.append('posterior')
  options = _options(prior, field, gauss)
  rows = []
  for index in range(FLAGS.first_map, FLAGS.first_map + FLAGS.num_maps):
    shear_map, truth = demo.demo_problem(index=index, noise_seed=index)
    if FLAGS.truth_lmax is not None:
      shear_map, truth = _band_limited(shear_map, truth, index)
    mask = np.asarray(shear_map.mask)
    results = pipeline.run_estimators(
        shear_map, methods, dataclasses.replace(
            options, seed=(index, 3), exact_seed=(index, 7)))
    summary = pipeline.summarise(shear_map, results, truth)['methods']
    row = {'index': index}
    if 'posterior' in results:
      result = results['posterior'].posterior
      for level in ('68', '95'):
        row[f'coverage_{level}'] = summary['posterior'][f'coverage_{level}']
      row['score_evaluations_per_sample'] = int(
          result.diagnostics['score_evaluations_per_sample'])
      row['seconds_per_sample'] = float(result.diagnostics['wall_time_per_sample_s'])
      # The mean of S samples has E|mean - truth|² = (posterior mean's MSE)
      # + (posterior variance)/S: this term is removed to extrapolate S → ∞.
      variance = np.var(np.asarray(result.samples, np.float64), axis=0, ddof=1)
      row['finite_sample_mse'] = float(variance[mask > 0].mean() / FLAGS.num_samples)
      row['posterior_std_learned'] = float(np.sqrt(variance[mask > 0].mean()))
    for name, entry in summary.items():
      key = _ROW_NAMES.get(name, name)
      row[f'rmse_{key}'] = entry['rmse']
      row[f'r_{key}'] = entry['pearson_r']
      # The sampler's own wall time for the learned posterior, as before.
      row[f'seconds_{key}'] = float(
          results[name].posterior.diagnostics['wall_time_s']
          if name == 'posterior' else entry['seconds'])
    rows.append(row)
    print(json.dumps(row), flush=True)
    if FLAGS.samples_dir:
      _save_samples(index, shear_map, truth, results, gauss)
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


def _band_limited(shear_map, truth, index):
  """The truth without modes above --truth_lmax, observed with the same noise."""
  n, pix = truth.shape[-1], shear_map.pixel_scale_arcmin
  ell = 2 * np.pi * np.fft.fftfreq(n, d=pix * lensing.ARCMIN_TO_RAD)
  modulus = np.hypot(ell[:, None], ell[None, :])
  truth = np.real(np.fft.ifft2(np.fft.fft2(truth) * (modulus <= FLAGS.truth_lmax)))
  shear = likelihood.ShearLikelihood(
      truth.astype(np.float64), np.asarray(shear_map.noise_std, np.float64),
      np.asarray(shear_map.mask, np.float64)).sample(seed=(index, 0))
  return (shear_map._replace(shear=shear.numpy().astype(np.float32)),
          truth.astype(np.float32))


def _save_samples(index, shear_map, truth, results, gauss):
  """Writes one map's truth, data summary and samples (float32) to an .npz."""
  arrays = {'truth': np.asarray(truth, np.float32),
            'mask': np.asarray(shear_map.mask, np.float32),
            'noise_std': np.asarray(shear_map.noise_std, np.float32),
            'pixel_scale_arcmin': np.float64(shear_map.pixel_scale_arcmin)}
  for name, result in results.items():
    arrays[f'kappa_{name}'] = np.asarray(result.kappa, np.float32)
  if 'posterior' in results:
    arrays['samples_posterior'] = np.asarray(
        results['posterior'].posterior.samples, np.float32)
    gaussian = wiener.gaussian_posterior_samples(
        as_shear_map(shear_map, dtype=tf.float64), prior=gauss,
        num_samples=FLAGS.num_samples, seed=(index, 11))
    arrays['samples_wiener'] = np.asarray(gaussian.samples, np.float32)
  os.makedirs(FLAGS.samples_dir, exist_ok=True)
  path = os.path.join(FLAGS.samples_dir, f'map_{index:04d}.npz')
  np.savez_compressed(path + '.partial.npz', **arrays)
  os.replace(path + '.partial.npz', path)


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
    rmse_se = rmse.std(ddof=1) / np.sqrt(len(rmse)) if len(rmse) > 1 else 0.
    print(f'| {name} | {rmse.mean():.5f} ± {rmse_se:.5f} '
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

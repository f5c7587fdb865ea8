r"""Mass maps of a shear catalogue, or of the embedded synthetic default.

With no flags, the embedded default: a held-out synthetic lognormal field at
the demo setting (128² pixels of 0.8 arcmin) seen through a COSMOS-like
footprint with per-pixel shape noise. With ``--catalog``, any FITS shear
catalogue, binned onto the grid given by the flags.

Writes to ``--output_dir``: one FITS map per estimator (with the WCS), the
mask and noise maps, the truth when known, ``summary.json`` (RMSE and Pearson
r of each map against the truth when known, timings, solver reports) and a
PNG figure.

Examples:

  python examples/map_shear.py --output_dir=out/demo
  python examples/map_shear.py \
      --catalog=../shared/data/cosmos/cosmos_shear_cat.fits \
      --weight_col=nhweight_int --flip_e2 --npix=360 --pixel_scale_arcmin=0.29 \
      --projection=radec --clusters=../shared/data/cosmos/xray_clusters_finoguenov2006.txt \
      --output_dir=out/cosmos
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

flags.DEFINE_string('catalog', None,
                    'FITS shear catalogue (binary table). Default: the embedded '
                    'synthetic field.')
flags.DEFINE_string('ra_col', 'ra', 'RA column of the catalogue [deg].')
flags.DEFINE_string('dec_col', 'dec', 'Dec column of the catalogue [deg].')
flags.DEFINE_string('e1_col', 'e1', 'First ellipticity component column.')
flags.DEFINE_string('e2_col', 'e2', 'Second ellipticity component column.')
flags.DEFINE_string('weight_col', None, 'Optional shape-weight column.')
flags.DEFINE_bool('flip_e2', False,
                  'Negate e2 (the COSMOS catalogue needs it to match the '
                  'Kaiser-Squires sign convention).')
flags.DEFINE_integer('npix', 128, 'Map side in pixels (catalogue mode).')
flags.DEFINE_float('pixel_scale_arcmin', 0.8,
                   'Pixel side in arcmin (catalogue mode).')
flags.DEFINE_enum('projection', 'tan', ['tan', 'radec'],
                  'Catalogue gridding: gnomonic TAN projection, or the plain '
                  'RA/Dec binning of the COSMOS reference grids.')
flags.DEFINE_float('center_ra', None, 'Grid centre RA [deg]; default median.')
flags.DEFINE_float('center_dec', None, 'Grid centre Dec [deg]; default median.')
flags.DEFINE_string('clusters', None,
                    'Optional cluster list (whitespace table: ID RA Dec ... z) '
                    'to overlay on the figure.')
_METHODS = ('ks', 'wiener', 'posterior', 'sparse', 'tv', 'mcalens')
flags.DEFINE_list('methods', ['ks', 'wiener', 'posterior'],
                  'Estimators to run: ks (Kaiser-Squires), wiener (Wiener filter), '
                  'posterior (annealed HMC samples under --prior), sparse (starlet '
                  'l1 MAP, GLIMPSE-like), tv (total-variation MAP), mcalens '
                  '(Wiener + sparse peaks).')
flags.DEFINE_enum('prior', 'learned', ['learned', 'gaussian'],
                  'Prior of the posterior sampler: the shipped learned score '
                  'network (tfp_massmap.load_prior) or the analytic Gaussian '
                  'prior with the shipped LCDM spectrum.')
flags.DEFINE_string('prior_path', None,
                    'A .keras score network to use instead of the shipped prior.')
flags.DEFINE_integer('num_samples', 40,
                     'Posterior samples (independent annealed chains); 95% intervals '
                     'need at least 39.')
flags.DEFINE_integer('num_levels', 30,  # sample_posterior's defaults, here and below.
                     'Annealing noise levels, geometric from 0.1 to 1e-3.')
flags.DEFINE_integer('num_leapfrog_steps', 3,
                     'Leapfrog steps per HMC transition.')
flags.DEFINE_float('step_size_factor', 0.5,
                   'Leapfrog step size in units of the noise level σ (dimensionless).')
flags.DEFINE_float('sparse_threshold_sigma', 3.0,
                   'Sparse and MCALens thresholds in units of the noise std per '
                   'starlet scale.')
flags.DEFINE_float('tv_regularisation', 1.0,
                   'Total-variation weight in units of the propagated pixel noise.')
flags.DEFINE_float('ks_smoothing_arcmin', 1.0,
                   'Gaussian smoothing std of the Kaiser-Squires map [arcmin].')
flags.DEFINE_integer('demo_index', 0,
                     'Which held-out test map is the embedded default truth.')
flags.DEFINE_integer('seed', 0, 'Seed of the noise draw of the embedded default.')
flags.DEFINE_string('output_dir', 'out/map_shear', 'Output directory.')
flags.DEFINE_bool('overwrite', True,
                  'Replace existing output files; with --nooverwrite an existing '
                  'output raises before anything is written.')

FLAGS = flags.FLAGS


def _load_data():
  """Returns (shear_map, truth or None, description)."""
  from tfp_massmap import catalog  # pylint: disable=g-import-not-at-top
  from tfp_massmap import demo  # pylint: disable=g-import-not-at-top
  if FLAGS.catalog is None:
    shear_map, truth = demo.demo_problem(index=FLAGS.demo_index, noise_seed=FLAGS.seed)
    return shear_map, truth, (f'embedded default: held-out lognormal map '
                              f'{FLAGS.demo_index}, COSMOS-like survey')
  cat = catalog.read_catalog(FLAGS.catalog, ra_col=FLAGS.ra_col,
                             dec_col=FLAGS.dec_col, e1_col=FLAGS.e1_col,
                             e2_col=FLAGS.e2_col, weight_col=FLAGS.weight_col,
                             flip_e2=FLAGS.flip_e2)
  center = None
  if FLAGS.center_ra is not None or FLAGS.center_dec is not None:
    if FLAGS.center_ra is None or FLAGS.center_dec is None:
      raise app.UsageError('--center_ra and --center_dec go together.')
    center = (FLAGS.center_ra, FLAGS.center_dec)
  shear_map = catalog.bin_shear_catalog(
      cat, FLAGS.npix, FLAGS.pixel_scale_arcmin, center=center,
      projection=FLAGS.projection)
  return shear_map, None, f'catalogue {FLAGS.catalog} ({len(cat.ra)} galaxies)'


def _run_methods(shear_map):
  """Runs the requested estimators; returns {name: (map, seconds, report)}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_massmap import gaussian_prior  # pylint: disable=g-import-not-at-top
  from tfp_massmap import lensing  # pylint: disable=g-import-not-at-top
  from tfp_massmap import lognormal  # pylint: disable=g-import-not-at-top
  from tfp_massmap import posterior  # pylint: disable=g-import-not-at-top
  from tfp_massmap import sparse  # pylint: disable=g-import-not-at-top
  from tfp_massmap import wiener  # pylint: disable=g-import-not-at-top

  n = shear_map.shear.shape[0]
  pix = shear_map.pixel_scale_arcmin
  shear = tf.constant(shear_map.shear, tf.float64)
  noise_std = tf.constant(shear_map.noise_std, tf.float64)
  mask = tf.constant(shear_map.mask, tf.float64)
  ell, cl = lognormal.cosmos_convergence_cl()
  prior = gaussian_prior.GaussianPrior.from_power_spectrum(ell, cl, n, pix,
                                                           dtype=tf.float64)

  def solver_report(info):
    return {'iterations': int(np.max(info.iterations)),
            'converged': bool(np.all(info.converged))}

  results = {}
  extras = {}
  for method in FLAGS.methods:
    start = time.perf_counter()
    if method == 'ks':
      kappa, _ = lensing.kaiser_squires(
          shear_map.shear, smoothing_arcmin=FLAGS.ks_smoothing_arcmin or None,
          pixel_scale_arcmin=pix)
      report = {'smoothing_arcmin': FLAGS.ks_smoothing_arcmin}
    elif method == 'wiener':
      kappa, info = wiener.wiener_filter(shear, noise_std, mask, prior)
      report = {**solver_report(info),
                'relative_residual': float(np.max(info.relative_residual))}
    elif method == 'sparse':
      kappa, info = sparse.sparse_map(
          shear, noise_std, mask, threshold_sigma=FLAGS.sparse_threshold_sigma)
      report = {**solver_report(info), 'threshold_sigma': FLAGS.sparse_threshold_sigma}
    elif method == 'tv':
      kappa, info = sparse.tv_map(shear, noise_std, mask,
                                  regularisation=FLAGS.tv_regularisation)
      report = {**solver_report(info), 'regularisation': FLAGS.tv_regularisation}
    elif method == 'posterior':
      result = posterior.sample_posterior(
          shear_map.shear, shear_map.noise_std, shear_map.mask,
          _posterior_prior(n, pix), num_samples=FLAGS.num_samples,
          num_levels=FLAGS.num_levels, num_leapfrog_steps=FLAGS.num_leapfrog_steps,
          step_size_factor=FLAGS.step_size_factor, seed=(FLAGS.seed, 1))
      kappa = result.mean
      extras['posterior'] = result
      report = {key: _jsonable(value) for key, value in result.diagnostics.items()}
    else:
      kappa, info = sparse.mcalens_map(
          shear, noise_std, mask, prior, threshold_sigma=FLAGS.sparse_threshold_sigma)
      report = {**solver_report(info), 'threshold_sigma': FLAGS.sparse_threshold_sigma}
    out = np.asarray(kappa)
    results[method] = (out.astype(np.float32), time.perf_counter() - start, report)
    logging.info('%s done in %.2f s', method, results[method][1])
  return results, extras


def _jsonable(value):
  """A JSON-serialisable form of a diagnostic value."""
  if hasattr(value, 'parameters'):  # a noise schedule
    return {'type': type(value).__name__, **value.parameters}
  if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, 'numpy'):
    return np.asarray(value).tolist()
  return value


def _posterior_prior(n, pixel_scale_arcmin):
  """The float32 prior of the sampler chosen by --prior / --prior_path."""
  from tfp_massmap import gaussian_prior  # pylint: disable=g-import-not-at-top
  from tfp_massmap import lognormal  # pylint: disable=g-import-not-at-top
  from tfp_massmap import priors  # pylint: disable=g-import-not-at-top
  from tfp_massmap import score_network  # pylint: disable=g-import-not-at-top
  if FLAGS.prior_path:
    return score_network.load_score_network(FLAGS.prior_path)
  if FLAGS.prior == 'gaussian':
    ell, cl = lognormal.cosmos_convergence_cl()
    return gaussian_prior.GaussianPrior.from_power_spectrum(ell, cl, n,
                                                            pixel_scale_arcmin)
  return priors.load_prior()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  unknown = [m for m in FLAGS.methods if m not in _METHODS]
  if unknown:
    raise app.UsageError(f'unknown --methods {unknown}; expected some of {_METHODS}.')
  from tfp_massmap import catalog  # pylint: disable=g-import-not-at-top
  from tfp_massmap import metrics  # pylint: disable=g-import-not-at-top
  from tfp_massmap import plotting  # pylint: disable=g-import-not-at-top

  # Everything is computed before anything is written, so a failure leaves no
  # partial output behind.
  shear_map, truth, description = _load_data()
  results, extras = _run_methods(shear_map)
  mask = shear_map.mask
  summary = {'input': description,
             'map_size': int(mask.shape[0]),
             'pixel_scale_arcmin': float(shear_map.pixel_scale_arcmin),
             'unmasked_fraction': float(mask.mean()),
             'methods': {}}
  for name, (kappa, seconds, report) in results.items():
    entry = {'seconds': seconds, **report}
    if truth is not None:
      entry['rmse'] = float(metrics.rmse(truth, kappa, mask))
      entry['pearson_r'] = float(metrics.pearson_r(truth, kappa, mask))
    summary['methods'][name] = entry

  maps = {f'kappa_{name}': r[0] for name, r in results.items()}
  if 'posterior' in extras:
    post = extras['posterior']
    maps['kappa_posterior_std'] = np.asarray(post.std, np.float32)
    maps['kappa_posterior_samples'] = np.asarray(post.samples, np.float32)
    if truth is not None:
      entry = summary['methods']['posterior']
      for level in ('68', '95'):
        lower, upper = (np.asarray(v) for v in getattr(post, f'interval_{level}'))
        entry[f'coverage_{level}'] = metrics.coverage(truth, lower, upper, mask)
  maps['mask'] = mask
  maps['noise_std'] = shear_map.noise_std[..., 0]
  if truth is not None:
    maps['kappa_truth'] = truth
  summary_text = json.dumps(summary, indent=2)
  targets = [os.path.join(FLAGS.output_dir, f'{name}.fits') for name in maps]
  targets += [os.path.join(FLAGS.output_dir, f) for f in ('maps.png', 'summary.json')]
  existing = [t for t in targets if os.path.exists(t)]
  if existing and not FLAGS.overwrite:
    raise app.UsageError(f'outputs exist already (pass --overwrite): {existing}')
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  for name, image in maps.items():
    catalog.write_map_fits(os.path.join(FLAGS.output_dir, f'{name}.fits'), image,
                           wcs=shear_map.wcs, overwrite=FLAGS.overwrite)

  clusters = None
  if FLAGS.clusters:
    table = catalog.read_cluster_list(FLAGS.clusters)
    x, y = shear_map.wcs.world_to_pixel_values(table['ra'], table['dec'])
    n = mask.shape[0]
    keep = (x >= 0) & (x < n) & (y >= 0) & (y < n)
    clusters = [(xi, yi, f'z={zi:.2f}') for xi, yi, zi in
                zip(x[keep], y[keep], table['z'][keep])]
  labels = {'ks': 'Kaiser-Squires', 'wiener': 'Wiener filter',
            'posterior': 'Posterior mean', 'sparse': 'Sparse (starlet)',
            'tv': 'Total variation', 'mcalens': 'MCALens-like'}
  panels = {}
  if truth is not None:
    panels['Truth'] = truth
  for name, (kappa, _, _) in results.items():
    panels[labels.get(name, name)] = kappa
  if 'posterior' in extras:
    post = extras['posterior']
    panels['Posterior std'] = np.asarray(post.std)
    panels['Posterior sample 1'] = np.asarray(post.samples[0])
    if len(post.samples) > 1:
      panels['Posterior sample 2'] = np.asarray(post.samples[1])
  figure = os.path.join(FLAGS.output_dir, 'maps.png')
  plotting.plot_maps(panels, figure, shear_map.pixel_scale_arcmin, mask=mask,
                     clusters=clusters, title=description)
  summary_path = os.path.join(FLAGS.output_dir, 'summary.json')
  with open(summary_path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(summary_text)
  os.replace(summary_path + '.tmp', summary_path)
  print(summary_text)
  print(f'wrote {len(maps)} FITS maps, {figure} and {summary_path}')


if __name__ == '__main__':
  app.run(main)

r"""Mass maps of a shear catalogue, or of the embedded synthetic default.

With no flags, the embedded default: a held-out synthetic lognormal field at
the demo setting (128² pixels of 0.8 arcmin) seen through a COSMOS-like
footprint with per-pixel shape noise. With ``--catalog``, any shear catalogue
(FITS, CSV, ECSV or Parquet table), binned onto the grid given by the flags.

Writes to ``--output_dir``: one FITS map per estimator (with the WCS), the
mask and noise maps, the truth when known, ``summary.json`` (RMSE and Pearson
r of each map against the truth when known, timings, solver and sampler
reports), a PNG figure and ``manifest.json`` (file sizes and SHA-256).

Order of work: every flag, the output folder, the catalogue (read and
binned), the cluster list and the prior (loaded, its pixel scale checked
against the grid) are checked first, and the memory the run needs is
compared with the machine's; only then do the estimators run. A bad input
therefore fails in seconds, before any sampling. A flag that would have no
effect (``--npix`` without ``--catalog``, ``--num_samples`` without the
posterior, ...) is an error rather than silently ignored.

Outputs are transactional (`tfp_massmap.outputs`): the products go to a
hidden staging folder beside ``--output_dir`` and replace it as a whole when
all are written. A run that fails or is killed at any moment leaves either
the complete previous set or the complete new one, never a mix (a
``--methods=ks`` rerun leaves no Wiener map of an earlier run). Every product
carries the run id: FITS keyword ``RUNID``, ``"run_id"`` of ``summary.json``
and ``manifest.json``, PNG text ``RunID``. ``--output_dir`` must be absent,
empty, or a folder written by this job (files of other origin there are never
deleted: the run refuses). ``summary.json`` is strict JSON: non-finite numbers
are written as null.

Divergence policy: the sampler counts the chains that diverged (non-finite
or runaway states). If any did, the job exits with code 3, names how many,
suggests a smaller ``--step_size_factor``, and writes nothing (the previous
outputs stay). With ``--drop_diverged_chains`` it instead drops them with a
warning, summarises the remaining ones (at least 2 must remain, else exit
code 3) and records ``num_diverged_chains``, ``diverged_chains``,
``num_dropped_chains`` and ``num_samples_kept`` in ``summary.json``.

Exit codes:

  0  the products were written.
  1  unexpected failure (a traceback); nothing was written.
  2  bad flag, input file, prior or output folder, or not enough memory;
     found before any expensive work, nothing was written.
  3  the posterior sampler diverged (see above); nothing was written.

Memory: the run is refused when its estimated peak memory exceeds the
machine's physical memory (``os.sysconf``), before anything is allocated.
With N = the map side in pixels and S = ``--num_samples``, the estimate in
bytes (`tfp_massmap.pipeline.memory_need_bytes`) is

  M = 1 GiB + N² · (250 + Σ_methods c_m)

with c_ks = 0, c_wiener = 1100, c_tv = 900, c_sparse = 4500,
c_mcalens = 5600 and c_posterior = 1000 + S · 1000 with the learned prior
(1000 + S · 250 with the Gaussian one), in bytes per pixel: the peak resident
memory measured on CPU, rounded up (1 GiB is TensorFlow, the prior network
and the catalogue). Summing the methods, which run one after another, makes
it an upper bound. The default run (128², ks + wiener + posterior, S = 40)
needs about 1.7 GiB; the COSMOS grid (360², S = 40) about 6.1 GiB.

Examples:
  python examples/map_shear.py --output_dir=out/demo
  python examples/map_shear.py \
      --catalog=../shared/data/cosmos/cosmos_shear_cat.fits \
      --weight_col=nhweight_int --flip_e2 --npix=360 --pixel_scale_arcmin=0.29 \
      --projection=radec --clusters=../shared/data/cosmos/xray_clusters_finoguenov2006.txt \
      --methods=ks,wiener --output_dir=out/cosmos
"""

import collections
import contextlib
import json
import math
import os
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

flags.DEFINE_string('catalog', None,
                    'Shear catalogue: a FITS, CSV, ECSV or Parquet table. '
                    'Default: the embedded synthetic field.')
flags.DEFINE_string('hdu', None,
                    'FITS HDU of the catalogue table, by index or name '
                    '(catalogue mode); default the first table HDU.')
flags.DEFINE_string('ra_col', 'ra', 'RA column of the catalogue [deg].')
flags.DEFINE_string('dec_col', 'dec', 'Dec column of the catalogue [deg].')
flags.DEFINE_string('e1_col', 'e1', 'First ellipticity component column.')
flags.DEFINE_string('e2_col', 'e2', 'Second ellipticity component column.')
flags.DEFINE_string('weight_col', None, 'Optional shape-weight column.')
flags.DEFINE_bool('flip_e2', False,
                  'Negate e2 (the COSMOS catalogue needs it to match the '
                  'Kaiser-Squires sign convention).')
flags.DEFINE_bool('keep_unphysical_ellipticities', False,
                  'Keep catalogue rows with |e| >= 1 (by default they are '
                  'counted and dropped).')
flags.DEFINE_float('sigma_e', None,
                   'Shape noise per ellipticity component (dimensionless, > 0) '
                   'for the noise map; default the standard deviation of the '
                   'binned galaxies\' e1 and e2 (catalogue mode).')
flags.DEFINE_integer('npix', 128, 'Map side in pixels (catalogue mode).')
flags.DEFINE_float('pixel_scale_arcmin', 0.8,
                   'Pixel side in arcmin (catalogue mode).')
flags.DEFINE_enum('projection', 'tan', ['tan', 'radec'],
                  'Catalogue gridding: gnomonic TAN projection, or the plain '
                  'RA/Dec binning of the COSMOS reference grids.')
flags.DEFINE_float('center_ra', None, 'Grid centre RA [deg]; default median.')
flags.DEFINE_float('center_dec', None, 'Grid centre Dec [deg]; default median.')
flags.DEFINE_string('clusters', None,
                    'Optional X-ray cluster list (the whitespace table of '
                    'Finoguenov et al. 2007: ID RA Dec r500 flux error z M500 ...) '
                    'to overlay on the figure and, with --statistics and the '
                    'posterior, to cross-match with the peaks (clusters.fits).')
flags.DEFINE_float('cluster_min_m500', 0.0,
                   'Mass cut of the clusters drawn and matched [1e13 solar '
                   'masses, M500].')
flags.DEFINE_bool('statistics', False,
                  'Also write statistics.json (power spectrum, one-point PDF '
                  'and moments, peak counts, Minkowski functionals of each map; '
                  'posterior bands) and, with the posterior, peaks.fits (the '
                  'posterior peak catalogue with sky positions).')
flags.DEFINE_float('statistics_smoothing_arcmin', 1.6,
                   'Gaussian smoothing std [arcmin] before the one-point, peak '
                   'and Minkowski statistics.')
flags.DEFINE_float('peak_threshold_snr', 2.0,
                   'Peaks of the posterior mean above this S/N (mean / '
                   'posterior std) go into peaks.fits.')
flags.DEFINE_float('peak_match_radius_arcmin', 2.0,
                   'Radius [arcmin] within which a sample\'s peak (or a '
                   'cluster) matches a peak.')
_METHODS = ('ks', 'wiener', 'posterior', 'sparse', 'tv', 'mcalens')
# The σ8 prior range of --prior=gaussian_sigma8.
_SIGMA8_BOUNDS = (0.6, 1.0)
flags.DEFINE_list('methods', ['ks', 'wiener', 'posterior'],
                  'Estimators to run: ks (Kaiser-Squires), wiener (Wiener filter), '
                  'posterior (annealed HMC samples under --prior), sparse (starlet '
                  'l1 MAP, GLIMPSE-like), tv (total-variation MAP), mcalens '
                  '(Wiener + sparse peaks).')
# --prior values that load a shipped learned prior (tfp_massmap.load_prior);
# cosmo_joint takes the joint prior calibrated on the data's map size
# (_shipped_name).
_SHIPPED = {'learned': 'lognormal_128', 'cosmo_joint': 'cosmo_joint_32',
            'cosmo_marginal': 'cosmo_marginal_32'}
flags.DEFINE_enum('prior', 'learned',
                  ['learned', 'cosmo_joint', 'cosmo_marginal', 'gaussian',
                   'gaussian_sigma8'],
                  'Prior of the posterior sampler: the shipped learned score '
                  'network (tfp_massmap.load_prior, trained on 0.8 arcmin '
                  'pixels of one cosmology); cosmo_joint: the shipped joint '
                  'prior over κ, Ωm and σ8 (Ωm in [0.2, 0.4], σ8 in [0.6, '
                  '1.0]; the joint posterior, writes parameters.png and '
                  'parameters.fits; cosmo_joint_128 on 128² maps, else '
                  'cosmo_joint_32, whose θ is calibrated on 32² maps, '
                  'docs/joint_prior.md); cosmo_marginal: the shipped map-only '
                  'prior over that cosmology range; gaussian: the analytic '
                  'Gaussian prior with the shipped LCDM spectrum; or '
                  'gaussian_sigma8: that spectrum with its amplitude free, '
                  'σ8 uniform on [0.6, 1.0] (joint posterior of κ and σ8, '
                  'written as for cosmo_joint).')
flags.DEFINE_integer('num_sweeps', 8,
                     '--prior=gaussian_sigma8 or cosmo_joint on masked or '
                     'non-white data: Gibbs sweeps that sample θ (each one κ run at '
                     '--sweep_num_levels; docs/benchmarks.md: 8 forget the '
                     'prior start, 3 leave the σ8 std 40 % wide).')
flags.DEFINE_integer('sweep_num_levels', 300,
                     '--prior=gaussian_sigma8 or cosmo_joint on masked or '
                     'non-white data: noise levels of the κ runs inside the Gibbs sweeps that '
                     'sample θ (docs/benchmarks.md: the default 30 leave '
                     'excess small-scale power that biases σ8 high).')
flags.DEFINE_string('prior_path', None,
                    'A .keras score network to use instead of the shipped prior.')
flags.DEFINE_bool('allow_prior_pixel_scale_mismatch', False,
                  'Run the posterior even when the learned prior was trained at '
                  'another pixel scale than the map\'s (by default an error).')
flags.DEFINE_integer('num_samples', 40,
                     'Posterior samples (independent annealed chains), >= 2; 95% '
                     'intervals need at least 39.')
flags.DEFINE_integer('num_levels', 30,  # sample_posterior's defaults, here and below.
                     'Annealing noise levels, geometric from 0.1 to 1e-3 (>= 2).')
flags.DEFINE_integer('num_leapfrog_steps', 3,
                     'Leapfrog steps per HMC transition.')
flags.DEFINE_float('step_size_factor', 0.5,
                   'Leapfrog step size in units of the noise level σ '
                   '(dimensionless, in (0, √2)); lower it if chains diverge.')
flags.DEFINE_enum('jit_compile', 'auto', ['auto', 'on', 'off'],
                  'XLA for the posterior: auto (on exactly when a GPU is '
                  'visible), on or off. On a GPU XLA samples 3-4x faster, but '
                  'its compilation adds about 25 s to the first map: off is '
                  'faster for one 128^2 map unless it draws more than about '
                  '1,800 samples.')
flags.DEFINE_bool('drop_diverged_chains', False,
                  'When posterior chains diverge, drop them with a warning and '
                  'record how many in summary.json, instead of failing with '
                  'exit code 3 and writing nothing.')
flags.DEFINE_float('sparse_threshold_sigma', 3.0,
                   'Sparse and MCALens thresholds in units of the noise std per '
                   'starlet scale.')
flags.DEFINE_float('tv_regularisation', 1.0,
                   'Total-variation weight in units of the propagated pixel noise.')
flags.DEFINE_float('ks_smoothing_arcmin', 1.0,
                   'Gaussian smoothing std of the Kaiser-Squires map [arcmin]; '
                   '0 for none.')
flags.DEFINE_integer('demo_index', 0,
                     'Which held-out test map is the embedded default truth.')
flags.DEFINE_integer('seed', 0, 'Seed of the noise draw of the embedded default '
                     'and of the posterior sampler (>= 0).')
flags.DEFINE_string('output_dir', 'out/map_shear',
                    'Output folder, replaced as a whole by each run.')
flags.DEFINE_bool('overwrite', True,
                  'Replace an existing output folder of an earlier run; with '
                  '--nooverwrite a non-empty output folder is an error, '
                  'raised before any work.')

FLAGS = flags.FLAGS

EXIT_OK = 0
EXIT_INVALID_INPUT = 2
EXIT_DIVERGED = 3

# Files of the output folder; and those that versions without a manifest
# wrote, so that such a folder may be replaced.
_OWN_FILES = ('kappa_*.fits', 'mask.fits', 'noise_std.fits', 'maps.png',
              'summary.json', 'summary.json.tmp', '.*.tmp', 'tmp*.png',
              'statistics.json', 'peaks.fits', 'clusters.fits')

# Flags that act only with --catalog, only with the posterior, or only with
# some methods ({flag: methods it applies to}).
_CATALOGUE_FLAGS = ('hdu', 'ra_col', 'dec_col', 'e1_col', 'e2_col', 'weight_col',
                    'flip_e2', 'keep_unphysical_ellipticities', 'sigma_e', 'npix',
                    'pixel_scale_arcmin', 'projection', 'center_ra', 'center_dec')
_POSTERIOR_FLAGS = ('prior', 'prior_path', 'allow_prior_pixel_scale_mismatch',
                    'num_samples', 'num_levels', 'num_sweeps', 'sweep_num_levels',
                    'num_leapfrog_steps', 'step_size_factor',
                    'drop_diverged_chains')
_STATISTICS_FLAGS = ('statistics_smoothing_arcmin', 'peak_threshold_snr',
                     'peak_match_radius_arcmin')
_METHOD_FLAGS = {'ks_smoothing_arcmin': ('ks',),
                 'sparse_threshold_sigma': ('sparse', 'mcalens'),
                 'tv_regularisation': ('tv',)}


class InputError(app.UsageError, ValueError):
  """A bad flag, input file, prior or output folder (exit code 2).

  Raised before any expensive work; nothing has been written.
  """

  def __init__(self, message):
    super().__init__(message, exitcode=EXIT_INVALID_INPUT)


class DivergenceError(RuntimeError):
  """Posterior chains diverged and --drop_diverged_chains is off (exit code 3)."""


_Plan = collections.namedtuple('_Plan', [
    'methods', 'folder', 'shear_map', 'truth', 'description', 'clusters',
    'prior'])


@contextlib.contextmanager
def _input_errors(what):
  """Reports any failure of the block as an InputError about ``what``."""
  try:
    yield
  except InputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f'{what}: {e}' if isinstance(e, (ValueError, OSError))
                     else f'{what}: {type(e).__name__}: {e}') from e


def _present(name):
  return FLAGS[name].present > 0


def _checked_methods():
  methods = [m.strip() for m in FLAGS.methods]
  unknown = [m for m in methods if m not in _METHODS]
  if unknown:
    raise InputError(f'unknown --methods {unknown}; expected some of {_METHODS}.')
  if not methods:
    raise InputError(f'--methods is empty; expected some of {_METHODS}.')
  twice = sorted({m for m in methods if methods.count(m) > 1})
  if twice:
    raise InputError(f'--methods lists {twice} more than once.')
  return methods


def _check_flag_scope(methods):
  """Refuses flags that would have no effect with the other flags given."""
  if FLAGS.catalog is None:
    stray = [f'--{name}' for name in _CATALOGUE_FLAGS if _present(name)]
    if stray:
      raise InputError(f'{stray} apply to a catalogue; pass --catalog, or drop '
                       'them for the embedded default (128² pixels of 0.8 arcmin).')
  elif _present('demo_index'):
    raise InputError('--demo_index selects the embedded default; it has no '
                     'effect with --catalog.')
  if 'posterior' not in methods:
    stray = [f'--{name}' for name in _POSTERIOR_FLAGS if _present(name)]
    if stray:
      raise InputError(f'{stray} apply to the posterior; add posterior to '
                       '--methods or drop them.')
  for name, users in _METHOD_FLAGS.items():
    if _present(name) and not set(users) & set(methods):
      raise InputError(f'--{name} applies to --methods {list(users)}, which are '
                       'not requested.')
  if not FLAGS.statistics:
    stray = [f'--{name}' for name in _STATISTICS_FLAGS if _present(name)]
    if stray:
      raise InputError(f'{stray} apply to --statistics; pass it or drop them.')
  if _present('cluster_min_m500') and not FLAGS.clusters:
    raise InputError('--cluster_min_m500 applies to --clusters; pass a cluster '
                     'list or drop it.')
  if _present('prior') and _present('prior_path'):
    raise InputError('pass either --prior or --prior_path, not both.')
  if (FLAGS.center_ra is None) != (FLAGS.center_dec is None):
    raise InputError('--center_ra and --center_dec go together.')


def _check_numbers(methods):
  """Range checks of the numeric flags."""
  def positive(name):
    value = FLAGS[name].value
    if not (math.isfinite(value) and value > 0):
      raise InputError(f'--{name} must be a finite number > 0, got {value}.')

  positive('pixel_scale_arcmin')
  if FLAGS.npix < 1:
    raise InputError(f'--npix must be >= 1, got {FLAGS.npix}.')
  if FLAGS.sigma_e is not None:
    positive('sigma_e')
  if FLAGS.center_dec is not None:
    if not (math.isfinite(FLAGS.center_ra) and math.isfinite(FLAGS.center_dec) and
            abs(FLAGS.center_dec) <= 90):
      raise InputError('--center_ra/--center_dec must be finite with |Dec| <= 90 '
                       f'deg, got ({FLAGS.center_ra}, {FLAGS.center_dec}).')
  if not (math.isfinite(FLAGS.ks_smoothing_arcmin) and
          FLAGS.ks_smoothing_arcmin >= 0):
    raise InputError('--ks_smoothing_arcmin must be a finite number >= 0 '
                     f'(arcmin), got {FLAGS.ks_smoothing_arcmin}.')
  positive('sparse_threshold_sigma')
  positive('tv_regularisation')
  positive('statistics_smoothing_arcmin')
  positive('peak_threshold_snr')
  positive('peak_match_radius_arcmin')
  if not (math.isfinite(FLAGS.cluster_min_m500) and FLAGS.cluster_min_m500 >= 0):
    raise InputError('--cluster_min_m500 must be a finite number >= 0 (1e13 '
                     f'solar masses), got {FLAGS.cluster_min_m500}.')
  if FLAGS.seed < 0:
    raise InputError(f'--seed must be >= 0, got {FLAGS.seed}.')
  if FLAGS.demo_index < 0:
    raise InputError(f'--demo_index must be >= 0, got {FLAGS.demo_index}.')
  if 'posterior' in methods:
    from tfp_massmap.mcmc import annealed_hmc  # pylint: disable=g-import-not-at-top
    from tfp_massmap.mcmc import schedules  # pylint: disable=g-import-not-at-top
    if FLAGS.num_samples < 2:
      raise InputError('--num_samples must be >= 2 (the posterior std and '
                       f'intervals need two samples), got {FLAGS.num_samples}.')
    if FLAGS.num_leapfrog_steps < 1:
      raise InputError('--num_leapfrog_steps must be >= 1, got '
                       f'{FLAGS.num_leapfrog_steps}.')
    limit = annealed_hmc.MAX_STABLE_STEP_SIZE_FACTOR
    if not 0 < FLAGS.step_size_factor < limit:
      raise InputError(f'--step_size_factor must be in (0, √2 = {limit:.4f}), '
                       'where leapfrog is stable for the annealed posterior; '
                       f'got {FLAGS.step_size_factor}.')
    with _input_errors('--num_levels'):
      schedules.GeometricSchedule(0.1, 1e-3, FLAGS.num_levels)
    if FLAGS.num_sweeps < 1:
      raise InputError(f'--num_sweeps must be >= 1, got {FLAGS.num_sweeps}.')
    with _input_errors('--sweep_num_levels'):
      schedules.GeometricSchedule(0.1, 1e-3, FLAGS.sweep_num_levels)


def _physical_memory_bytes():
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def _check_memory(methods):
  from tfp_massmap import demo  # pylint: disable=g-import-not-at-top
  from tfp_massmap import pipeline  # pylint: disable=g-import-not-at-top
  npix = FLAGS.npix if FLAGS.catalog else demo.DEMO_MAP_SIZE
  prior = ('gaussian' if FLAGS.prior.startswith('gaussian') and not FLAGS.prior_path
           else 'learned')
  need = pipeline.memory_need_bytes(npix, methods, FLAGS.num_samples, prior)
  have = _physical_memory_bytes()
  if need > have:
    raise InputError(
        f'a {npix}x{npix} map with --methods={",".join(methods)}'
        f'{f" and {FLAGS.num_samples} posterior samples" if "posterior" in methods else ""} '
        f'needs about {need / 2**30:.1f} GiB of memory; this machine has '
        f'{have / 2**30:.1f} GiB. Use a smaller --npix (or fewer --num_samples).')


def _output_folder():
  from tfp_massmap import outputs  # pylint: disable=g-import-not-at-top
  with _input_errors(f'--output_dir={FLAGS.output_dir}'):
    return outputs.OutputFolder(FLAGS.output_dir, overwrite=FLAGS.overwrite,
                                own_files=_OWN_FILES)


def _hdu():
  if FLAGS.hdu is None:
    return None
  return int(FLAGS.hdu) if FLAGS.hdu.lstrip('+-').isdigit() else FLAGS.hdu


def _load_data():
  """Returns (shear_map, truth or None, description)."""
  from tfp_massmap import catalog  # pylint: disable=g-import-not-at-top
  from tfp_massmap import demo  # pylint: disable=g-import-not-at-top
  if FLAGS.catalog is None:
    with _input_errors('embedded default'):
      shear_map, truth = demo.demo_problem(index=FLAGS.demo_index,
                                           noise_seed=FLAGS.seed)
    return shear_map, truth, (f'embedded default: held-out lognormal map '
                              f'{FLAGS.demo_index}, COSMOS-like survey')
  with _input_errors(f'--catalog={FLAGS.catalog}'):
    cat = catalog.read_catalog(
        FLAGS.catalog, ra_col=FLAGS.ra_col, dec_col=FLAGS.dec_col,
        e1_col=FLAGS.e1_col, e2_col=FLAGS.e2_col, weight_col=FLAGS.weight_col,
        flip_e2=FLAGS.flip_e2, hdu=_hdu(),
        keep_unphysical_ellipticities=FLAGS.keep_unphysical_ellipticities)
  center = None
  if FLAGS.center_ra is not None:
    center = (FLAGS.center_ra, FLAGS.center_dec)
  with _input_errors(f'binning --catalog={FLAGS.catalog}'):
    shear_map = catalog.bin_shear_catalog(
        cat, FLAGS.npix, FLAGS.pixel_scale_arcmin, center=center,
        projection=FLAGS.projection, sigma_e=FLAGS.sigma_e)
  return shear_map, None, f'catalogue {FLAGS.catalog} ({len(cat.ra)} galaxies)'


def _load_clusters():
  """The --clusters table (`catalog.read_cluster_list`), or None."""
  from tfp_massmap import catalog  # pylint: disable=g-import-not-at-top
  if not FLAGS.clusters:
    return None
  with _input_errors(f'--clusters={FLAGS.clusters}'):
    return catalog.read_cluster_list(FLAGS.clusters)


def _cluster_overlay(shear_map, table):
  """The clusters above --cluster_min_m500 on the map: [(x, y, label)]."""
  if table is None:
    return None
  table = table[table['m500'] >= FLAGS.cluster_min_m500]
  x, y = shear_map.wcs.world_to_pixel_values(table['ra'], table['dec'])
  n = shear_map.mask.shape[0]
  keep = (x >= -0.5) & (x < n - 0.5) & (y >= -0.5) & (y < n - 0.5)
  return [(xi, yi, f'z={zi:.2f}, {mi:.1f}') for xi, yi, zi, mi in
          zip(x[keep], y[keep], table['z'][keep], table['m500'][keep])]


def _posterior_prior(shear_map):
  """The float32 prior chosen by --prior / --prior_path, checked against the map."""
  from tfp_massmap import cosmology  # pylint: disable=g-import-not-at-top
  from tfp_massmap import priors  # pylint: disable=g-import-not-at-top
  n = shear_map.shear.shape[0]
  if FLAGS.prior_path:
    with _input_errors(f'--prior_path={FLAGS.prior_path}'):
      prior = priors.load_prior(pathlib.Path(FLAGS.prior_path))
  elif FLAGS.prior.startswith('gaussian'):
    ell, cl = cosmology.cosmos_convergence_cl()
    prior = priors.GaussianPrior.from_power_spectrum(
        ell, cl, n, shear_map.pixel_scale_arcmin)
    if FLAGS.prior == 'gaussian_sigma8':
      prior = priors.AmplitudeGaussianPrior(
          prior, _SIGMA8_BOUNDS, sigma8_fiducial=cosmology.FIDUCIAL_SIGMA8)
  else:
    prior = priors.load_prior(_shipped_name(FLAGS.prior, n))
  # sample_posterior repeats these checks, but only after the other methods.
  with _input_errors(f'--npix={n}' if FLAGS.catalog else 'embedded default'):
    priors.check_prior(prior, n)
  try:
    priors.check_prior(prior, shear_map, allow_pixel_scale_mismatch=(
        True if FLAGS.allow_prior_pixel_scale_mismatch else None))
  except ValueError as e:
    raise InputError(
        f'{e} Pass --pixel_scale_arcmin={prior.pixel_scale_arcmin:g}, a prior '
        f'made for {shear_map.pixel_scale_arcmin:g} arcmin pixels '
        '(--prior_path), --prior=gaussian, or '
        '--allow_prior_pixel_scale_mismatch to sample anyway.') from e
  return prior


def _shipped_name(prior_flag, map_size):
  """The shipped prior of a --prior value for maps of map_size pixels."""
  from tfp_massmap import priors  # pylint: disable=g-import-not-at-top
  if prior_flag == 'cosmo_joint':
    # The joint prior whose θ likelihood was trained on maps of this size.
    for name, shipped in priors.SHIPPED_PRIORS.items():
      if shipped.theta_map_size == map_size:
        return name
  return _SHIPPED[prior_flag]


def _validate():
  """Checks every flag and input before any expensive work; returns a _Plan."""
  methods = _checked_methods()
  _check_flag_scope(methods)
  _check_numbers(methods)
  folder = _output_folder()
  _check_memory(methods)
  shear_map, truth, description = _load_data()
  clusters = _load_clusters()
  prior = _posterior_prior(shear_map) if 'posterior' in methods else None
  return _Plan(methods, folder, shear_map, truth, description, clusters, prior)


def _run_methods(plan):
  """Runs the estimators (`tfp_massmap.pipeline`) under the divergence policy."""
  from tfp_massmap import pipeline  # pylint: disable=g-import-not-at-top
  from tfp_massmap import posterior  # pylint: disable=g-import-not-at-top
  from tfp_massmap.mcmc import schedules  # pylint: disable=g-import-not-at-top
  options = pipeline.EstimatorOptions(
      ks_smoothing_arcmin=FLAGS.ks_smoothing_arcmin,
      sparse_threshold_sigma=FLAGS.sparse_threshold_sigma,
      tv_regularisation=FLAGS.tv_regularisation,
      prior=plan.prior, num_samples=FLAGS.num_samples,
      schedule=schedules.GeometricSchedule(
          posterior.DEFAULT_SIGMA_MAX, posterior.DEFAULT_SIGMA_MIN,
          FLAGS.num_levels),
      sweep_schedule=schedules.GeometricSchedule(
          posterior.DEFAULT_SIGMA_MAX, posterior.DEFAULT_SIGMA_MIN,
          FLAGS.sweep_num_levels),
      num_sweeps=FLAGS.num_sweeps,
      num_leapfrog_steps=FLAGS.num_leapfrog_steps,
      step_size_factor=FLAGS.step_size_factor, seed=(FLAGS.seed, 1),
      allow_pixel_scale_mismatch=FLAGS.allow_prior_pixel_scale_mismatch,
      drop_diverged_chains=FLAGS.drop_diverged_chains, progress=True,
      jit_compile={'auto': None, 'on': True, 'off': False}[FLAGS.jit_compile])
  try:
    return pipeline.run_estimators(
        plan.shear_map, plan.methods, options,
        callback=lambda name, result: logging.info('%s done in %.2f s', name,
                                                   result.seconds))
  except pipeline.DivergenceError as e:
    message = (f'{e.num_diverged} of {e.num_samples} posterior chains diverged '
               f'(non-finite or runaway states) at --step_size_factor='
               f'{FLAGS.step_size_factor}; try a smaller --step_size_factor '
               '(e.g. half of it)')
    if e.dropping:
      raise DivergenceError(
          f'{message}. Only {e.num_samples - e.num_diverged} chain(s) would '
          'remain, too few for a posterior std; nothing was written.') from e
    raise DivergenceError(f'{message}. Nothing was written; pass '
                          '--drop_diverged_chains to keep the other chains.'
                         ) from e


def _products(plan, results):
  """(maps {name: array}, summary dict, figure panels) of a finished run."""
  from tfp_massmap import pipeline  # pylint: disable=g-import-not-at-top
  truth = plan.truth
  summary = pipeline.summarise(plan.shear_map, results, truth,
                               run_id=plan.folder.run_id,
                               input=plan.description)
  maps = {f'kappa_{name}': result.kappa for name, result in results.items()}
  panels = {}
  if truth is not None:
    panels['Truth'] = truth
  for name, result in results.items():
    panels[pipeline.ESTIMATORS[name].label] = result.kappa
  if 'posterior' in results:
    post = results['posterior'].posterior
    samples = np.asarray(post.samples, np.float32)
    maps['kappa_posterior_std'] = np.asarray(post.std, np.float32)
    maps['kappa_posterior_samples'] = samples
    panels['Posterior std'] = np.asarray(post.std)
    for i in range(min(2, len(samples))):
      panels[f'Posterior sample {i + 1}'] = samples[i]
  maps['mask'] = plan.shear_map.mask
  maps['noise_std'] = plan.shear_map.noise_std[..., 0]
  if truth is not None:
    maps['kappa_truth'] = truth
  return maps, pipeline.strict_json(summary), panels


def _statistics_products(plan, results):
  """(statistics dict, {name: table columns}, figure peaks) for --statistics."""
  from tfp_massmap import pipeline  # pylint: disable=g-import-not-at-top
  if not FLAGS.statistics:
    return None, {}, None
  stats = pipeline.statistics_summary(
      plan.shear_map, results, smoothing_arcmin=FLAGS.statistics_smoothing_arcmin)
  stats['run_id'] = plan.folder.run_id
  tables, overlay = {}, None
  if 'posterior' in results:
    peaks, matched = pipeline.peak_tables(
        plan.shear_map, results['posterior'],
        threshold_snr=FLAGS.peak_threshold_snr,
        match_radius_arcmin=FLAGS.peak_match_radius_arcmin,
        clusters=plan.clusters, min_m500=FLAGS.cluster_min_m500)
    tables['peaks'] = peaks
    overlay = list(zip(peaks['x'], peaks['y'], peaks['probability']))
    stats['peaks'] = {'threshold_snr': FLAGS.peak_threshold_snr,
                      'match_radius_arcmin': FLAGS.peak_match_radius_arcmin,
                      'num_peaks': int(peaks['x'].size)}
    if matched is not None:
      tables['clusters'] = matched
      on_mask = matched['on_mask']
      stats['clusters'] = {
          'min_m500_1e13_msun': FLAGS.cluster_min_m500,
          'num_on_map': int(matched['id'].size),
          'num_on_mask': int(on_mask.sum()),
          'mean_peak_probability_on_mask':
              float(np.mean(matched['peak_probability'][on_mask]))
              if on_mask.any() else None,
          # The same probability at random positions on the mask.
          'random_position_peak_probability': pipeline.peak_probability_baseline(
              plan.shear_map, results['posterior'],
              threshold_snr=FLAGS.peak_threshold_snr,
              match_radius_arcmin=FLAGS.peak_match_radius_arcmin)}
  return pipeline.strict_json(stats), tables, overlay


def _write_table(path, columns, run_id):
  """A FITS binary table of numpy columns, with the run id in its header."""
  from astropy.io import fits  # pylint: disable=g-import-not-at-top
  from astropy.table import Table  # pylint: disable=g-import-not-at-top
  table = Table({k: np.asarray(v) for k, v in columns.items()})
  hdu = fits.table_to_hdu(table)
  hdu.header['RUNID'] = (run_id, 'run id of this output set')
  fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def _write(plan, maps, summary, panels, stats=None, tables=None, peaks=None,
           parameters=None):
  """Writes every product into the output folder as one transaction."""
  from tfp_massmap import catalog  # pylint: disable=g-import-not-at-top
  from tfp_massmap import plotting  # pylint: disable=g-import-not-at-top
  folder = plan.folder
  summary_text = json.dumps(summary, indent=2, allow_nan=False)
  header = {'RUNID': (folder.run_id, 'run id of this output set')}
  with folder:
    for name, image in maps.items():
      catalog.write_map_fits(folder.path_for(f'{name}.fits'), image,
                             wcs=plan.shear_map.wcs, header=header)
    plotting.plot_maps(panels, folder.path_for('maps.png'),
                       plan.shear_map.pixel_scale_arcmin, mask=plan.shear_map.mask,
                       clusters=_cluster_overlay(plan.shear_map, plan.clusters),
                       peaks=peaks, title=plan.description,
                       metadata={'RunID': folder.run_id})
    for name, columns in (tables or {}).items():
      _write_table(folder.path_for(f'{name}.fits'), columns, folder.run_id)
    if parameters:  # The joint posterior's θ samples.
      _write_table(folder.path_for('parameters.fits'), parameters,
                   folder.run_id)
      plotting.plot_parameters(
          parameters, folder.path_for('parameters.png'),
          bounds=plan.prior.theta_bounds, title=plan.description,
          metadata={'RunID': folder.run_id})
    if stats is not None:
      with open(folder.path_for('statistics.json'), 'w', encoding='utf-8') as f:
        f.write(json.dumps(stats, indent=2, allow_nan=False) + '\n')
    with open(folder.path_for('summary.json'), 'w', encoding='utf-8') as f:
      f.write(summary_text + '\n')
  return summary_text


def main(argv):
  """Runs the job; raises InputError (exit 2) or DivergenceError (exit 3)."""
  if len(argv) > 1:
    raise InputError(f'unexpected arguments: {argv[1:]}')
  plan = _validate()
  results = _run_methods(plan)
  maps, summary, panels = _products(plan, results)
  stats, tables, peaks = _statistics_products(plan, results)
  post = results['posterior'].posterior if 'posterior' in results else None
  parameters = ({name: np.asarray(value) for name, value in
                 post.parameters.items()} if post is not None and post.parameters
                else None)
  summary_text = _write(plan, maps, summary, panels, stats, tables, peaks,
                        parameters)
  print(summary_text)
  extra = ''.join(f', {name}.fits' for name in tables) + (
      ', statistics.json' if stats is not None else '') + (
          ', parameters.fits, parameters.png' if parameters else '')
  print(f'wrote {len(maps)} FITS maps, maps.png, summary.json{extra} to '
        f'{plan.folder.path} (run id {plan.folder.run_id})')


def _exit_code_main(argv):
  """`main` for the command line: known failures become a message and an exit code."""
  try:
    main(argv)
  except InputError as e:
    sys.stderr.write(f'map_shear.py: error: {e}\n')
    return EXIT_INVALID_INPUT
  except DivergenceError as e:
    sys.stderr.write(f'map_shear.py: error: {e}\n')
    return EXIT_DIVERGED
  return EXIT_OK


def _parse_flags(argv):
  """Absl's flag parsing, with exit code 2 for a malformed flag."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f'map_shear.py: error: {e}\nPass --helpshort for the flags.\n')
    sys.exit(EXIT_INVALID_INPUT)


if __name__ == '__main__':
  app.run(_exit_code_main, flags_parser=_parse_flags)

r"""Survey-scale mass maps: a wide-field shear catalogue → HEALPix κ maps.

Covers the catalogue's footprint with gnomonic tiles (``--npix`` pixels of
``--pixel_scale_arcmin`` per side, overlapping by ``--overlap_pix``), runs the
estimators on each tile as a Dask task, and stitches the tiles onto HEALPix
(`tfp_massmap.survey_job.map_survey`, whose docstring says how tiles are
blended and run).

Writes to ``--output_dir`` (as one transaction, `tfp_massmap.outputs`):
partial-sky HEALPix FITS maps (RING, celestial coordinates, keyword RUNID)
``kappa_<estimator>.fits``, with the posterior ``kappa_posterior_std.fits``
and, with ``--keep_samples``, ``kappa_posterior_samples.fits``; the blending
weight ``weight.fits`` and the galaxy counts ``footprint.fits`` (with
``--output_format=healsparse`` the same maps as HealSparse files
``<name>.hsp``); the tile
index ``tiles.json``; ``summary.json`` (timings, tiles per hour, and with
``--truth`` the RMSE, Pearson r and seam ratio of each map); the figure
``maps.png``; ``manifest.json``. Finished tiles are cached in
``<output_dir>.tiles/``: a killed or failed run, rerun with the same flags,
computes only the tiles that were not finished (``--noresume`` recomputes
all).

Execution: ``--workers=N`` starts a local Dask cluster of N single-threaded
worker processes (TensorFlow bounded to ``--tf_threads`` each); ``--workers=0``
runs in this process; ``--scheduler_address`` uses a running cluster (e.g. one
started with dask-jobqueue on SLURM or PBS, see the survey_job docstring).

Exit codes:

  0  the products were written.
  1  unexpected failure (a traceback); nothing was written (finished tiles
     stay cached).
  2  bad flag, catalogue (or a HATS catalogue without lsdb installed), prior,
     truth map or output folder, found before any tile ran; nothing was
     written.
  3  posterior chains of a tile diverged; nothing was written (finished
     tiles stay cached).

Examples:
  python examples/map_survey.py --catalog=survey.parquet \
      --output_dir=out/survey --workers=2
  python examples/map_survey.py --catalog=cat/ --ra_col=RA --dec_col=DEC \
      --e1_col=G1 --e2_col=G2 --estimators=ks,wiener,posterior \
      --num_samples=40 --scheduler_address=tcp://10.0.0.1:8786 \
      --output_dir=out/survey
  python examples/map_survey.py --catalog=survey_hats/ \
      --output_format=healsparse --output_dir=out/survey
"""

import contextlib
import math
import sys

from absl import app
from absl import flags

flags.DEFINE_list('catalog', None,
                  'Shear catalogue(s), comma-separated: FITS or Parquet tables, '
                  'folders holding a partitioned Parquet dataset, or HATS '
                  'catalogue or collection folders (needs lsdb: pip install '
                  '"tfp_massmap[hats]"). Required.')
flags.DEFINE_string('ra_col', 'ra', 'RA column of the catalogue [deg].')
flags.DEFINE_string('dec_col', 'dec', 'Dec column of the catalogue [deg].')
flags.DEFINE_string('e1_col', 'e1', 'First ellipticity component column '
                    '(dimensionless, local RA/Dec frame).')
flags.DEFINE_string('e2_col', 'e2', 'Second ellipticity component column.')
flags.DEFINE_string('weight_col', None, 'Optional shape-weight column.')
flags.DEFINE_bool('flip_e2', False,
                  'Negate e2 (catalogues whose e2 sign is opposite to the '
                  'Kaiser-Squires convention, such as COSMOS).')
flags.DEFINE_bool('keep_unphysical_ellipticities', False,
                  'Keep catalogue rows with |e| >= 1 (by default dropped).')
_ESTIMATORS = ('ks', 'wiener', 'posterior', 'curved_ks')
flags.DEFINE_list('estimators', ['ks', 'wiener'],
                  'Estimators per tile: ks (Kaiser-Squires), wiener (Wiener '
                  'filter), posterior (annealed HMC samples under the prior); '
                  'and curved_ks, the curved-sky Kaiser-Squires map of the '
                  'whole catalogue (spin-2 harmonics at --nside) with its '
                  'B-mode map, beside a tile estimator.')
flags.DEFINE_integer('npix', 128, 'Tile side in pixels (the prior\'s size).')
flags.DEFINE_float('pixel_scale_arcmin', 0.8,
                   'Tile pixel side [arcmin] (the prior\'s pixel scale).')
flags.DEFINE_integer('overlap_pix', 16,
                     'Tapered overlap band of each tile [tile pixels].')
flags.DEFINE_integer('nside', None,
                     'HEALPix NSIDE of the maps (power of 2); default the one '
                     'whose pixel side is closest to --pixel_scale_arcmin.')
flags.DEFINE_float('min_fill', 0.25,
                   'Skip tiles with fewer than this fraction of pixels holding '
                   'galaxies, in [0, 1].')
flags.DEFINE_float('sigma_e', None,
                   'Shape noise per ellipticity component (dimensionless, > 0); '
                   'default sqrt(mean(e1² + e2²)/2) of the catalogue.')
flags.DEFINE_float('ks_smoothing_arcmin', 1.0,
                   'Gaussian smoothing std of the Kaiser-Squires tiles '
                   '[arcmin]; 0 for none.')
flags.DEFINE_enum('prior', 'learned', ['learned', 'gaussian'],
                  'Prior of the posterior: the shipped learned score network '
                  '(0.8 arcmin pixels, 128² tiles) or the Gaussian prior of the '
                  'shipped LCDM spectrum.')
flags.DEFINE_string('prior_path', None,
                    'A .keras score network to use instead of the shipped prior.')
flags.DEFINE_bool('allow_prior_pixel_scale_mismatch', False,
                  'Sample although the prior was trained at another pixel '
                  'scale than --pixel_scale_arcmin (by default an error).')
flags.DEFINE_integer('num_samples', 40,
                     'Posterior samples (chains) per tile, >= 2.')
flags.DEFINE_integer('num_levels', 30,
                     'Annealing noise levels of the posterior (>= 2).')
flags.DEFINE_integer('keep_samples', 0,
                     'Stitched posterior samples to write (<= --num_samples).')
flags.DEFINE_integer('workers', 1,
                     'Worker processes of the local Dask cluster; 0 runs the '
                     'tiles in this process.')
flags.DEFINE_string('scheduler_address', None,
                    'Address of a running Dask scheduler (e.g. '
                    'tcp://host:8786); replaces the local cluster.')
flags.DEFINE_integer('tf_threads', None,
                     'TensorFlow threads per worker; default the CPU count '
                     'over --workers on a local cluster.')
flags.DEFINE_string('truth', None,
                    'Optional true κ HEALPix FITS map (RING, at the run\'s '
                    'NSIDE) to score the maps against in summary.json.')
flags.DEFINE_integer('seed', 0, 'Seed of the posterior (tile i uses (seed, i)).')
flags.DEFINE_string('output_dir', 'out/map_survey',
                    'Output folder, replaced as a whole by each run; tiles are '
                    'cached beside it in <output_dir>.tiles/.')
flags.DEFINE_enum('output_format', 'fits', ['fits', 'healsparse'],
                  'Map files: fits (partial-sky HEALPix FITS, <name>.fits, '
                  'as healpy.read_map reads them) or healsparse (HealSparse '
                  'maps, <name>.hsp, float32 with sentinel UNSEEN; the '
                  'samples one record map with fields sample0, sample1, ...). '
                  'The tile cache serves both.')
flags.DEFINE_bool('overwrite', True,
                  'Replace an existing output folder of an earlier run.')
flags.DEFINE_bool('resume', True,
                  'Reuse finished tiles of an earlier run with the same flags '
                  'and catalogue; --noresume recomputes every tile.')

FLAGS = flags.FLAGS

EXIT_OK = 0
EXIT_INVALID_INPUT = 2
EXIT_DIVERGED = 3

_POSTERIOR_FLAGS = ('prior', 'prior_path', 'allow_prior_pixel_scale_mismatch',
                    'num_samples', 'num_levels', 'keep_samples')


class InputError(app.UsageError, ValueError):
  """A bad flag or input (exit code 2), found before any tile ran."""

  def __init__(self, message):
    super().__init__(message, exitcode=EXIT_INVALID_INPUT)


@contextlib.contextmanager
def _input_errors(what, also=()):
  """Reports a ValueError, OSError (or ``also``) of the block as an InputError."""
  try:
    yield
  except InputError:
    raise
  except (ValueError, OSError, *also) as e:
    raise InputError(f'{what}: {e}') from e


def _checked_flags():
  """Flag checks that need no file; returns the estimators."""
  if not FLAGS.catalog:
    raise InputError('--catalog is required: one or more FITS or Parquet '
                     'catalogues, or partitioned Parquet folders.')
  estimators = [e.strip() for e in FLAGS.estimators]
  unknown = [e for e in estimators if e not in _ESTIMATORS]
  if unknown or not estimators:
    raise InputError(f'--estimators must be some of {_ESTIMATORS}, got '
                     f'{FLAGS.estimators}.')
  if 'posterior' not in estimators:
    stray = [f'--{n}' for n in _POSTERIOR_FLAGS if FLAGS[n].present]
    if stray:
      raise InputError(f'{stray} apply to the posterior; add posterior to '
                       '--estimators or drop them.')
  if FLAGS['prior'].present and FLAGS.prior_path:
    raise InputError('pass either --prior or --prior_path, not both.')
  for name, minimum in (('npix', 2), ('overlap_pix', 0), ('num_levels', 2)):
    if FLAGS[name].value < minimum:
      raise InputError(f'--{name} must be >= {minimum}, got '
                       f'{FLAGS[name].value}.')
  for name in ('pixel_scale_arcmin', 'sigma_e'):
    value = FLAGS[name].value
    if value is not None and not (math.isfinite(value) and value > 0):
      raise InputError(f'--{name} must be a finite number > 0, got {value}.')
  if not (math.isfinite(FLAGS.ks_smoothing_arcmin) and
          FLAGS.ks_smoothing_arcmin >= 0):
    raise InputError('--ks_smoothing_arcmin must be a finite number >= 0 '
                     f'(arcmin), got {FLAGS.ks_smoothing_arcmin}.')
  if FLAGS.tf_threads is not None and FLAGS.tf_threads < 1:
    raise InputError(f'--tf_threads must be >= 1, got {FLAGS.tf_threads}.')
  if FLAGS.scheduler_address and FLAGS['workers'].present:
    raise InputError('pass either --workers or --scheduler_address, not both.')
  if FLAGS.seed < 0:
    raise InputError(f'--seed must be >= 0, got {FLAGS.seed}.')
  return estimators


def _prior():
  if FLAGS.prior_path:
    return FLAGS.prior_path
  return 'gaussian' if FLAGS.prior == 'gaussian' else None


def main(argv):
  """Runs the survey job; raises InputError (exit 2)."""
  if len(argv) > 1:
    raise InputError(f'unexpected arguments: {argv[1:]}')
  estimators = _checked_flags()
  from tfp_massmap import survey_job  # pylint: disable=g-import-not-at-top
  # A HATS catalogue without lsdb installed is an ImportError naming the
  # extra to install.
  with _input_errors(f'--catalog={",".join(FLAGS.catalog)}', (ImportError,)):
    catalog = survey_job.read_survey_catalog(
        FLAGS.catalog, ra_col=FLAGS.ra_col, dec_col=FLAGS.dec_col,
        e1_col=FLAGS.e1_col, e2_col=FLAGS.e2_col, weight_col=FLAGS.weight_col,
        flip_e2=FLAGS.flip_e2,
        keep_unphysical_ellipticities=FLAGS.keep_unphysical_ellipticities)
  truth = None
  if FLAGS.truth:
    import healpy as hp  # pylint: disable=g-import-not-at-top
    with _input_errors(f'--truth={FLAGS.truth}'):
      truth = hp.read_map(FLAGS.truth, nest=False)
  # map_survey checks the rest (prior, output folder, tiles, tile cache)
  # before the first tile; its ValueErrors are input errors.
  with _input_errors('survey'):
    result = survey_job.map_survey(
        catalog, FLAGS.output_dir, estimators=estimators, npix=FLAGS.npix,
        pixel_scale_arcmin=FLAGS.pixel_scale_arcmin,
        overlap_pix=FLAGS.overlap_pix, nside=FLAGS.nside,
        min_fill=FLAGS.min_fill, prior=_prior(),
        num_samples=FLAGS.num_samples, num_levels=FLAGS.num_levels,
        keep_samples=FLAGS.keep_samples, sigma_e=FLAGS.sigma_e,
        ks_smoothing_arcmin=FLAGS.ks_smoothing_arcmin, seed=FLAGS.seed,
        truth=truth,
        allow_pixel_scale_mismatch=FLAGS.allow_prior_pixel_scale_mismatch,
        n_workers=FLAGS.workers, scheduler_address=FLAGS.scheduler_address,
        tf_threads=FLAGS.tf_threads, resume=FLAGS.resume,
        overwrite=FLAGS.overwrite, output_format=FLAGS.output_format)
  print(f'wrote {len(result.maps)} HEALPix maps ({FLAGS.output_format}, nside '
        f'{result.summary["nside"]}), tiles.json, summary.json and maps.png '
        f'from {len(result.tiles)} tiles ({result.summary["num_tiles_cached"]}'
        f' from the cache) to {result.path} (run id {result.run_id})')


def _exit_code_main(argv):
  """`main` for the command line: known failures become a message and a code."""
  try:
    main(argv)
  except InputError as e:
    sys.stderr.write(f'map_survey.py: error: {e}\n')
    return EXIT_INVALID_INPUT
  except Exception as e:  # pylint: disable=broad-except
    from tfp_massmap import pipeline  # pylint: disable=g-import-not-at-top
    if not isinstance(e, pipeline.DivergenceError):
      raise
    sys.stderr.write(f'map_survey.py: error: in a tile, {e} Nothing was '
                     'written; finished tiles stay cached.\n')
    return EXIT_DIVERGED
  return EXIT_OK


def _parse_flags(argv):
  """Absl's flag parsing, with exit code 2 for a malformed flag."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f'map_survey.py: error: {e}\nPass --helpshort for the '
                     'flags.\n')
    sys.exit(EXIT_INVALID_INPUT)


if __name__ == '__main__':
  app.run(_exit_code_main, flags_parser=_parse_flags)

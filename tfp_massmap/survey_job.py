"""Survey-scale mass maps: tiles of a wide-field catalogue as Dask tasks.

`map_survey` turns a shear catalogue of any size into HEALPix convergence
maps (RING ordering, dimensionless κ):

1. The catalogue (a `catalog.Catalog`, or FITS / Parquet files, a
   partitioned Parquet dataset or a HATS catalogue through the optional
   lsdb, read file by file, only the named columns;
   `read_survey_catalog`) is covered by gnomonic tiles
   (`tiling.plan_tiles`).
2. Each tile is one task: its galaxies are binned on the tile's grid
   (`tiling.bin_tile`, which rotates the ellipticities into the tile frame),
   the estimators run on it by name (`pipeline.run_estimators`), and the
   result is persisted atomically in the tile cache
   ``<output_dir>.tiles/`` (``tile_00012.npz`` with the maps, then
   ``tile_00012.json`` with the timings and reports; a tile is finished
   when its JSON exists). A rerun with the same settings and catalogue
   skips finished tiles, so a killed run resumes without recomputing any.
3. The tiles are stitched onto HEALPix at ``nside``
   (`tiling.stitch_healpix_pixels`, weights that fall to 0 at tile edges;
   memory scales with the footprint, not the sphere), and the products are
   written as one transaction (`outputs.OutputFolder`): partial-sky HEALPix
   FITS maps (explicit RING pixels, as `healpy.read_map` reads them; keyword
   RUNID) ``kappa_<estimator>.fits`` (with the posterior
   ``kappa_posterior_std.fits`` and optionally
   ``kappa_posterior_samples.fits``), ``mask.fits`` (the footprint: 1 where
   the stitched 0/1 tile masks are >= 0.5, i.e. the tile pixels there hold
   galaxies), ``weight.fits`` (total blending weight), ``footprint.fits``
   (galaxies per HEALPix pixel), the tile index ``tiles.json``,
   ``summary.json`` (tiles, timings, tiles per hour; with a truth map the
   RMSE and Pearson r on the mask, the seam ratio `tiling.seam_metric` and
   the posterior's Gaussian-interval coverage) and the figure ``maps.png``.
   The maps cover every pixel the tiles reach; read them on ``mask``.
   With ``output_format='healsparse'`` each map is a HealSparse file
   ``<name>.hsp`` instead (`healsparse`, the sparse HEALPix format DES
   uses: float32, sentinel `healpy.UNSEEN`, metadata RUNID, the same
   values on the same pixels; the samples one record map with a field per
   sample).

Execution. ``n_workers=0`` runs the tiles one after another in this
process. ``n_workers >= 1`` (default 1) starts a `dask.distributed`
``LocalCluster`` of that many single-threaded worker processes, each with
TensorFlow bounded to ``tf_threads`` threads and, when GPUs are visible,
one GPU (worker i sees GPU i mod the GPU count). ``scheduler_address``
connects to a running cluster instead, and ``client`` uses a given
`distributed.Client`. On SLURM or PBS, start the workers with
``dask-jobqueue`` and pass its client::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=4, memory='16GB', processes=1,
                           job_extra_directives=['--gres=gpu:1'])
    cluster.scale(jobs=8)
    map_survey(cat, 'out/survey', client=distributed.Client(cluster), ...)

A script that starts a LocalCluster must call `map_survey` under
``if __name__ == '__main__':`` (worker processes are spawned and import the
main module; examples/map_survey.py does so through ``app.run``).

Each worker process keeps its prior (loaded once) and, through
`posterior.sample_posterior`'s sampler cache, one compiled
`PosteriorSampler` per tile shape: the trace is made on a worker's first
tile and reused for the others. The tile cache must be on a file system
every worker can write (the output folder's parent).

Determinism. Tile i's posterior uses the stateless seed ``(seed, i)`` and
tiles are stitched in index order, so the products do not depend on the
number of workers or on which worker ran which tile.

Blending. Every product is the weighted mean over the tiles covering a
HEALPix pixel (`tiling.stitch_healpix`). The posterior std is stitched as
the std of that mixture: sqrt(blend(std² + mean²) − blend(mean)²). Stitched
sample k blends sample k of every tile: inside one tile it is a posterior
sample, but in an overlap band it averages independent draws of two tiles,
so its variance there is below the posterior's and its correlations across
a seam are not those of a joint sample of the whole footprint (use the
stitched std, not the spread of stitched samples, for errors).
"""

import collections
import contextlib
import functools
import hashlib
import json
import math
import os
import resource
import sys
import time
import warnings

from distributed.diagnostics import plugin as dask_plugin
import numpy as np

from tfp_massmap import catalog as catalog_lib
from tfp_massmap import cosmology
from tfp_massmap import metrics
from tfp_massmap import outputs
from tfp_massmap import pipeline
from tfp_massmap import sky
from tfp_massmap import tiling

__all__ = [
    'ESTIMATORS',
    'OUTPUT_FORMATS',
    'SurveyResult',
    'TileError',
    'map_survey',
    'read_survey_catalog',
    'tile_cache_dir',
]

# Estimators a survey run may request (pipeline names).
ESTIMATORS = ('ks', 'wiener', 'posterior', 'curved_ks')
# Estimators of the whole footprint at once, not per tile.
_SPHERE_ESTIMATORS = ('curved_ks',)
# Files of the output folder written by earlier versions of the job.
_OWN_FILES = ('*.fits', 'tiles.json', 'summary.json', 'maps.png')
_TILE_NAME = 'tile_{:05d}'
_SETTINGS_NAME = 'settings.json'
_PARQUET_SUFFIXES = ('.parquet', '.pq')
# Formats of the product map files (map_survey's output_format).
OUTPUT_FORMATS = ('fits', 'healsparse')
_HEALSPARSE_NSIDE_COVERAGE = 32
# Files that mark a folder as a HATS catalogue (hats.properties or
# properties; lsdb writes both) or a HATS collection (a catalogue with its
# margin caches): the markers hats itself looks for.
_HATS_MARKERS = ('hats.properties', 'properties', 'collection.properties')


class TileError(RuntimeError):
  """A tile task failed (other than by diverged chains); see ``__cause__``.

  Attributes:
    index: the tile's index.
  """

  def __init__(self, index, error):
    self.index = index
    super().__init__(f'tile {index} failed: {type(error).__name__}: {error}. '
                     'Finished tiles stay cached; a rerun resumes.')


def _tile_result(run, index):
  """``run()``; its errors become TileError (DivergenceError passes)."""
  try:
    return run()
  except pipeline.DivergenceError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise TileError(index, e) from e


class SurveyResult(collections.namedtuple('SurveyResult', [
    'path', 'run_id', 'nside', 'pixels', 'maps', 'mask', 'weight', 'tiles',
    'summary'])):
  """What `map_survey` returns: the products on the pixels the tiles cover.

  Attributes:
    path: the output folder.
    run_id: the run id written into every product.
    nside: HEALPix NSIDE of the products.
    pixels: int64 ``[n]``, the sorted RING pixels with positive blending
      weight (memory scales with the footprint, not the sphere).
    maps: `dict` product name → float values ``[n]`` on ``pixels``
      (``kappa_ks``, ``kappa_wiener``, ``kappa_posterior``,
      ``kappa_posterior_std``; ``kappa_posterior_samples`` ``[K, n]``).
    mask: ``[n]``, 1 where the tiles' pixels hold galaxies (stitched tile
      masks >= 0.5), else 0: the footprint.
    weight: ``[n]``, the total blending weight.
    tiles: the `tiling.Tile`s, in index order.
    summary: the `dict` written to ``summary.json``.
  """
  __slots__ = ()

  def full_map(self, name):
    """Product ``name`` (or ``'mask'``, ``'weight'``) as a full-sky map.

    RING ``[12·nside²]`` (``[K, 12·nside²]`` for samples), float64,
    `healpy.UNSEEN` off the tiles.
    """
    import healpy as hp  # pylint: disable=g-import-not-at-top
    values = {'mask': self.mask, 'weight': self.weight}.get(name)
    values = self.maps[name] if values is None else values
    full = np.full(values.shape[:-1] + (hp.nside2npix(self.nside),), hp.UNSEEN)
    full[..., self.pixels] = values
    return full


def tile_cache_dir(output_dir):
  """The tile cache of a run writing to ``output_dir``: ``<output_dir>.tiles``."""
  return os.path.abspath(os.fspath(output_dir)).rstrip(os.sep) + '.tiles'


def _is_hats(path):
  """Whether folder ``path`` is a HATS catalogue or collection (its marker)."""
  return any(os.path.isfile(os.path.join(path, name)) for name in _HATS_MARKERS)


def _hats_files(path):
  """The Parquet files of a HATS catalogue's partitions, listed through lsdb.

  ``path`` is a HATS catalogue of objects or a collection (whose primary
  catalogue is read; its margin caches, which repeat rows of neighbouring
  partitions, are not). The partitions come in the catalogue's order.
  """
  try:
    import lsdb  # pylint: disable=g-import-not-at-top
    from hats.io import paths as hats_paths  # pylint: disable=g-import-not-at-top
  except ImportError as exc:
    raise ImportError(
        f'catalogue {path} is a HATS catalogue; reading it needs lsdb, which '
        'is not installed: pip install "tfp_massmap[hats]".') from exc
  try:
    hats_catalog = lsdb.open_catalog(path)
  except TypeError as exc:  # Margin, index or association tables.
    kind = lsdb.read_hats(path).hc_structure.catalog_info.catalog_type
    raise ValueError(
        f'catalogue {path} is a HATS {kind} catalogue, not a catalogue of '
        'galaxies; pass the object catalogue or its collection.') from exc
  except (OSError, ValueError) as exc:
    raise ValueError(f'could not open HATS catalogue {path} with lsdb '
                     f'({exc}).') from exc
  structure = hats_catalog.hc_structure
  files = []
  for pixel in hats_catalog.get_healpix_pixels():
    partition = hats_paths.pixel_catalog_file(
        structure.catalog_base_dir, pixel,
        npix_suffix=structure.catalog_info.npix_suffix)
    files += _source_files(os.fspath(partition))  # A file or a folder.
  return files


def _source_files(source):
  """The files of one catalogue source: itself, or a dataset's files.

  A folder is a HATS catalogue when it holds a HATS properties file, else a
  partitioned Parquet dataset.
  """
  import pyarrow.dataset as ds  # pylint: disable=g-import-not-at-top
  path = os.fspath(source)
  if not os.path.exists(path):
    raise FileNotFoundError(f'catalogue {path} does not exist.')
  if not os.path.isdir(path):
    return [path]
  if _is_hats(path):
    return _hats_files(path)
  files = sorted(ds.dataset(path, format='parquet', partitioning='hive').files)
  if not files:
    raise ValueError(f'catalogue folder {path} holds no Parquet file; expected '
                     'a partitioned Parquet dataset or a HATS catalogue.')
  return files


def _num_rows(path):
  """Rows of a Parquet file from its metadata; None for other formats."""
  if not path.lower().endswith(_PARQUET_SUFFIXES):
    return None
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    return pq.ParquetFile(path).metadata.num_rows
  except Exception as exc:  # pylint: disable=broad-except
    raise ValueError(f'could not read {path} as a Parquet file ({exc}).') from exc


def _check_catalog(cat):
  """Checks the columns of an in-memory `Catalog`; returns float64 arrays."""
  arrays = [np.asarray(c, dtype=np.float64) for c in cat]
  n = arrays[0].shape
  for name, values in zip(catalog_lib.Catalog._fields, arrays):
    if values.ndim != 1 or values.shape != n:
      raise ValueError(f'catalog {name} has shape {values.shape}; every column '
                       f'must be 1-D with the shape of ra, {n}.')
    if not np.isfinite(values).all():
      raise ValueError(f'catalog {name} holds {int((~np.isfinite(values)).sum())}'
                       ' non-finite value(s); expected finite values.')
  if n[0] == 0:
    raise ValueError('catalog is empty (0 galaxies).')
  if (np.abs(arrays[1]) > 90).any():
    raise ValueError(f'catalog dec spans {arrays[1].min()}..{arrays[1].max()} '
                     'deg; expected values in [-90, 90].')
  return catalog_lib.Catalog(*arrays)


def read_survey_catalog(source, *, ra_col='ra', dec_col='dec', e1_col='e1',
                        e2_col='e2', weight_col=None, flip_e2=False,
                        keep_unphysical_ellipticities=False):
  """Reads a survey catalogue from files, partition by partition.

  Args:
    source: a `catalog.Catalog` (checked and returned), or a path or a list
      of paths, each a FITS or Parquet table (any format
      `catalog.read_catalog` reads), a folder holding a partitioned
      Parquet dataset (hive-style or plain; every ``.parquet`` file under
      it is one partition), or a local HATS catalogue or collection folder
      (told by its ``hats.properties``, ``properties`` or
      ``collection.properties`` file; needs the optional lsdb,
      ``pip install "tfp_massmap[hats]"``): lsdb opens it and lists its
      partitions (a collection's primary catalogue, not its margin caches,
      which repeat rows), each one Parquet file. Each file is read by
      `catalog.read_catalog`, only the named columns (FITS tables
      memory-mapped), with its rules for unusable rows, so a HATS
      catalogue gives the rows its table gives as one Parquet file; empty
      Parquet partitions are skipped.
    ra_col, dec_col, e1_col, e2_col, weight_col, flip_e2,
      keep_unphysical_ellipticities: as in `catalog.read_catalog` (RA and
      Dec in deg, ellipticities dimensionless in the local RA/Dec frame).

  Returns:
    A `catalog.Catalog` of float64 arrays, the files in the order given
    (Parquet partitions sorted by path, HATS partitions in the catalogue's
    HEALPix order).

  Raises:
    FileNotFoundError: for a path where nothing exists.
    ImportError: for a HATS catalogue when lsdb is not installed (the
      message names the install extra).
    ValueError: for an empty list or dataset, a HATS folder lsdb cannot
      open or that holds no galaxies (a margin cache), or what
      `read_catalog` raises for a file (the message names it).
  """
  if isinstance(source, catalog_lib.Catalog):
    return _check_catalog(source)
  sources = ([source] if isinstance(source, (str, os.PathLike)) else
             list(source))
  if not sources:
    raise ValueError('the catalogue list is empty; expected at least one path.')
  parts = []
  for src in sources:
    if not isinstance(src, (str, os.PathLike)):
      raise ValueError(f'catalogue sources must be paths or one Catalog, got '
                       f'{type(src).__name__}.')
    for path in _source_files(src):
      if _num_rows(path) == 0:
        continue
      parts.append(catalog_lib.read_catalog(
          path, ra_col=ra_col, dec_col=dec_col, e1_col=e1_col, e2_col=e2_col,
          weight_col=weight_col, flip_e2=flip_e2,
          keep_unphysical_ellipticities=keep_unphysical_ellipticities))
  if not parts:
    raise ValueError(f'catalogue {sources} holds no rows.')
  return catalog_lib.Catalog(*(np.concatenate(c) for c in zip(*parts)))


def _fingerprint(cat):
  """SHA-256 of the catalogue's columns (float64 bytes)."""
  digest = hashlib.sha256()
  for column in cat:
    digest.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
  return digest.hexdigest()


def _sigma_e(cat):
  """Shape noise per component: rms of the (frame-invariant) |e|² / 2."""
  return float(np.sqrt(np.mean(cat.e1**2 + cat.e2**2) / 2))


class _TileSettings(collections.namedtuple('_TileSettings', [
    'estimators', 'prior', 'num_samples', 'num_levels', 'seed', 'sigma_e',
    'ks_smoothing_arcmin', 'keep_samples', 'allow_pixel_scale_mismatch'])):
  """What a tile task needs besides its galaxies (picklable, JSON-able)."""
  __slots__ = ()


# Per worker process: loaded priors, by (spec, npix, pixel scale).
_worker_priors = {}


def _worker_prior(spec, npix, pixel_scale_arcmin):
  """The prior of ``spec``, loaded once per process and reused."""
  key = (spec, npix, pixel_scale_arcmin)
  if key not in _worker_priors:
    from tfp_massmap import priors  # pylint: disable=g-import-not-at-top
    if spec == 'gaussian':
      ell, cl = cosmology.cosmos_convergence_cl()
      _worker_priors[key] = priors.GaussianPrior.from_power_spectrum(
          ell, cl, npix, pixel_scale_arcmin)
    else:
      _worker_priors[key] = priors.load_prior(spec)
  return _worker_priors[key]


def _tile_paths(cache_dir, index):
  stem = os.path.join(cache_dir, _TILE_NAME.format(index))
  return stem + '.npz', stem + '.json'


def _run_tile(galaxies, tile, settings, cache_dir):
  """One task: bins, estimates and persists a tile; returns its JSON record."""
  from tfp_massmap import posterior  # pylint: disable=g-import-not-at-top
  from tfp_massmap.mcmc import schedules  # pylint: disable=g-import-not-at-top
  began = time.perf_counter()
  shear_map = tiling.bin_tile(galaxies, tile, sigma_e=settings.sigma_e)
  prior = None
  if 'posterior' in settings.estimators:
    prior = _worker_prior(settings.prior, tile.npix, tile.pixel_scale_arcmin)
  options = pipeline.EstimatorOptions(
      ks_smoothing_arcmin=settings.ks_smoothing_arcmin, prior=prior,
      num_samples=settings.num_samples,
      schedule=schedules.GeometricSchedule(
          posterior.DEFAULT_SIGMA_MAX, posterior.DEFAULT_SIGMA_MIN,
          settings.num_levels),
      seed=(settings.seed, tile.index),
      allow_pixel_scale_mismatch=settings.allow_pixel_scale_mismatch)
  results = pipeline.run_estimators(shear_map, settings.estimators, options)
  arrays = {'mask': np.asarray(shear_map.mask, np.float32),
            'counts': np.asarray(shear_map.counts, np.int32)}
  for name, result in results.items():
    arrays[f'kappa_{name}'] = result.kappa
  if 'posterior' in results:
    post = results['posterior'].posterior
    arrays['kappa_posterior_std'] = np.asarray(post.std, np.float32)
    arrays['kappa_posterior_samples'] = np.asarray(
        post.samples, np.float32)[:settings.keep_samples]
  record = {
      'index': int(tile.index), 'ra_deg': float(tile.ra_deg),
      'dec_deg': float(tile.dec_deg), 'npix': int(tile.npix),
      'pixel_scale_arcmin': float(tile.pixel_scale_arcmin),
      'margin_pix': int(tile.margin_pix),
      'num_galaxies': int(np.sum(shear_map.counts)),
      'filled_fraction': float(np.mean(shear_map.mask)),
      'estimators': {name: {'seconds': r.seconds, **r.report}
                     for name, r in results.items()},
      'seconds': time.perf_counter() - began,
      'pid': os.getpid(),
      # Peak resident memory of the worker process so far (Linux: KiB).
      'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }
  npz_path, json_path = _tile_paths(cache_dir, tile.index)
  outputs.write_file_atomic(npz_path, lambda f: np.savez(f, **arrays))
  outputs.write_json_atomic(json_path, pipeline.strict_json(record),
                            allow_nan=False)
  return record


class _TensorFlowSetup(dask_plugin.WorkerPlugin):
  """Dask worker plugin: bounds TensorFlow's threads, gives each worker a GPU."""

  name = 'tfp_massmap-tensorflow-setup'

  def __init__(self, threads):
    self.threads = threads

  def setup(self, worker):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      tf.config.threading.set_intra_op_parallelism_threads(self.threads)
      tf.config.threading.set_inter_op_parallelism_threads(
          min(2, self.threads))
      gpus = tf.config.list_physical_devices('GPU')
      if len(gpus) > 1:
        slot = sum(map(ord, str(worker.name)))
        if str(worker.name).isdigit():
          slot = int(worker.name)
        tf.config.set_visible_devices(gpus[slot % len(gpus)], 'GPU')
    except RuntimeError:  # TensorFlow already ran in this worker.
      warnings.warn(f'worker {worker.name}: TensorFlow was initialised before '
                    'the thread bound could be set.', RuntimeWarning)


def _subset(cat, index):
  return catalog_lib.Catalog(*(c[index] for c in cat))


def _prepare_cache(cache_dir, settings_record, resume):
  """Creates or checks the tile cache; returns the finished tile indices."""
  os.makedirs(cache_dir, exist_ok=True)
  settings_path = os.path.join(cache_dir, _SETTINGS_NAME)
  tile_files = [n for n in os.listdir(cache_dir) if n.startswith('tile_')]
  if os.path.exists(settings_path):
    with open(settings_path, encoding='utf-8') as f:
      previous = json.load(f)
    if previous != settings_record:
      if resume:
        changed = sorted(k for k in set(previous) | set(settings_record)
                         if previous.get(k) != settings_record.get(k))
        raise ValueError(
            f'the tile cache {cache_dir} holds tiles of another run (its '
            f'settings differ in {changed}); pass resume=False to recompute '
            'every tile, or another output folder.')
  elif tile_files:
    raise ValueError(f'the tile cache {cache_dir} holds tile files but no '
                     f'{_SETTINGS_NAME}; it was not written by map_survey. '
                     'Remove it or choose another output folder.')
  if not resume:
    for name in tile_files:
      os.remove(os.path.join(cache_dir, name))
  if not resume or not os.path.exists(settings_path):
    outputs.write_json_atomic(settings_path, settings_record, indent=2,
                              sort_keys=True)
  finished = set()
  for name in os.listdir(cache_dir):
    if name.startswith('tile_') and name.endswith('.json'):
      finished.add(int(name[len('tile_'):-len('.json')]))
  return finished


def _format_seconds(seconds):
  seconds = int(round(seconds))
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class _Progress:
  """Tiles done / total and the estimated time left, on stderr."""

  def __init__(self, total, cached, enabled):
    self.total, self.done, self.cached = total, cached, cached
    self.enabled = enabled
    self.began = time.perf_counter()
    self.report()

  def tile_done(self):
    self.done += 1
    self.report()

  def report(self):
    if not self.enabled:
      return
    computed = self.done - self.cached
    line = f'map_survey: tiles {self.done}/{self.total} done'
    if self.cached:
      line += f' ({self.cached} from the cache)'
    if computed and self.done < self.total:
      left = (time.perf_counter() - self.began) / computed * (
          self.total - self.done)
      line += f', about {_format_seconds(left)} left'
    sys.stderr.write(line + '\n')
    sys.stderr.flush()


def _run_tiles(jobs, settings, cache_dir, client, n_workers, tf_threads,
               scheduler_address, progress):
  """Runs the tile tasks (in process or on Dask); returns the wall time (s)."""
  began = time.perf_counter()
  if not jobs:
    return 0.0
  if client is None and scheduler_address is None and n_workers == 0:
    for galaxies, tile in jobs:
      _tile_result(functools.partial(_run_tile, galaxies, tile, settings,
                                     cache_dir), tile.index)
      progress.tile_done()
    return time.perf_counter() - began
  import distributed  # pylint: disable=g-import-not-at-top
  owned = []
  try:
    if client is None:
      if scheduler_address is not None:
        client = distributed.Client(scheduler_address)
      else:
        cluster = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True,
            dashboard_address=':0')
        owned.append(cluster)
        client = distributed.Client(cluster)
      owned.insert(0, client)
    if tf_threads is not None:
      client.register_plugin(_TensorFlowSetup(tf_threads))
    # Each tile's galaxies go to the cluster as data, not inside the graph.
    futures = {client.submit(
        _run_tile, client.scatter(galaxies, hash=False), tile, settings,
        cache_dir, key=f'tfp_massmap-tile-{tile.index}-{time.time_ns()}',
        pure=False): tile.index for galaxies, tile in jobs}
    for future in distributed.as_completed(futures):
      _tile_result(future.result, futures[future])
      progress.tile_done()
  finally:
    for thing in owned:
      thing.close()
  return time.perf_counter() - began


def _stitch(tiles, cache_dir, nside, estimators, keep_samples):
  """HEALPix products from the cached tiles, on the pixels the tiles cover.

  Returns (pixels, maps, mask, weight): the sorted RING pixels ``[n]`` with
  positive blending weight; product name → values ``[n]`` (samples
  ``[K, n]``); the 0/1 mask ``[n]``, 1 where at least half the blended tile
  pixels hold galaxies (stitched 0/1 tile masks >= 0.5); the total weight.
  """
  stacks = collections.defaultdict(list)
  for tile in tiles:
    with np.load(_tile_paths(cache_dir, tile.index)[0]) as data:
      stacks['mask'].append(data['mask'].astype(np.float64))
      for name in estimators:
        stacks[f'kappa_{name}'].append(data[f'kappa_{name}'].astype(np.float64))
      if 'posterior' in estimators:
        mean = data['kappa_posterior'].astype(np.float64)
        std = data['kappa_posterior_std'].astype(np.float64)
        stacks['second_moment'].append(std**2 + mean**2)
        if keep_samples:
          stacks['kappa_posterior_samples'].append(
              data['kappa_posterior_samples'].astype(np.float64))

  def stitched(name):
    return tiling.stitch_healpix_pixels(tiles, stacks[name], nside)[1]

  pixels, observed, weight = tiling.stitch_healpix_pixels(
      tiles, stacks['mask'], nside)
  maps = {f'kappa_{n}': stitched(f'kappa_{n}') for n in estimators}
  if 'posterior' in estimators:
    maps['kappa_posterior_std'] = np.sqrt(np.maximum(
        stitched('second_moment') - maps['kappa_posterior']**2, 0.0))
    if keep_samples:
      maps['kappa_posterior_samples'] = stitched('kappa_posterior_samples')
  return pixels, maps, (observed >= 0.5).astype(np.float64), weight


def _curved_kaiser_squires(cat, nside, pixels, smoothing_arcmin):
  """Curved-sky KS of the whole catalogue, read on the stitched pixels.

  The galaxies are averaged on HEALPix pixels at ``nside`` (no tile, no
  rotation) and inverted with spin-2 harmonics
  (`curved_sky.kaiser_squires_healpix`, the DES Y3 method), with the tiled
  KS's Gaussian smoothing. Returns the E and B maps; the B map of a
  pure-E field is noise and mask leakage only (a null test). Memory: a few
  full-sky float64 maps at ``nside`` (0.4 GB each at 2048, 1.6 GB at 4096).
  """
  from tfp_massmap import curved_sky  # pylint: disable=g-import-not-at-top
  shear = curved_sky.healpix_shear_maps(cat, nside)
  kappa_e, kappa_b = curved_sky.kaiser_squires_healpix(
      shear.gamma1, shear.gamma2, mask=shear.mask,
      smoothing_arcmin=smoothing_arcmin or None)
  return {'kappa_curved_ks': kappa_e[pixels],
          'kappa_curved_ks_bmode': kappa_b[pixels]}


def _write_partial_map(path, nside, pixels, values, run_id):
  """A partial-sky HEALPix FITS map (explicit RING pixels), as healpy reads.

  One float32 column per map of ``values [n]`` or ``[K, n]``.
  """
  from astropy.io import fits  # pylint: disable=g-import-not-at-top
  values = np.atleast_2d(values)
  columns = [fits.Column(name='PIXEL', format='K', array=pixels)]
  columns += [fits.Column(name='SIGNAL' if len(values) == 1 else f'SIGNAL{k}',
                          format='E', array=v.astype(np.float32))
              for k, v in enumerate(values)]
  table = fits.BinTableHDU.from_columns(columns)
  for key, value, comment in (
      ('PIXTYPE', 'HEALPIX', 'HEALPix pixelisation'),
      ('ORDERING', 'RING', 'pixel ordering scheme'),
      ('COORDSYS', 'C', 'celestial (RA, Dec)'),
      ('EXTNAME', 'xtension', ''),
      ('NSIDE', int(nside), 'resolution parameter'),
      ('FIRSTPIX', 0, ''), ('LASTPIX', 12 * int(nside)**2 - 1, ''),
      ('INDXSCHM', 'EXPLICIT', 'pixels listed in the PIXEL column'),
      ('OBJECT', 'PARTIAL', 'partial sky'),
      ('RUNID', run_id, 'run id of this output set')):
    table.header[key] = (value, comment)
  fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def _write_healsparse_map(path, nside, pixels, values, run_id):
  """A HealSparse map file of ``values`` on the RING ``pixels``.

  float32 with sentinel `healpy.UNSEEN` (healsparse stores NEST pixels;
  read it with ``healsparse.HealSparseMap.read``), coverage NSIDE
  ``min(32, nside)`` (1.8 deg coverage pixels: a 1.7 deg tile touches a
  few), metadata ``RUNID``. ``values [K, n]`` (samples) become one record
  map with float32 fields ``sample0`` .. ``sample<K-1>`` (the primary field
  ``sample0``): one file per product, as in FITS, the pixels stored once,
  and ``m['sample3']`` reads one sample as a map.
  """
  import healpy as hp  # pylint: disable=g-import-not-at-top
  import healsparse  # pylint: disable=g-import-not-at-top
  values = np.asarray(values)
  if values.ndim == 1:
    dtype, primary = np.float32, None
    data = values.astype(np.float32)
  else:
    dtype = np.dtype([(f'sample{k}', np.float32) for k in range(len(values))])
    primary = 'sample0'
    data = np.empty(values.shape[1], dtype)
    for k, sample in enumerate(values):
      data[f'sample{k}'] = sample
  sparse = healsparse.HealSparseMap.make_empty(
      min(_HEALSPARSE_NSIDE_COVERAGE, nside), nside, dtype, primary=primary,
      sentinel=hp.UNSEEN, metadata={'RUNID': run_id})
  sparse.update_values_pix(hp.ring2nest(nside, pixels), data)
  sparse.write(path)


def _truth_metrics(pixels, maps, truth, mask, tiles, nside):
  """RMSE, Pearson r (means removed) and seam ratio of each map on the mask.

  For the posterior mean also the coverage of the Gaussian intervals
  mean ± 1 std and mean ± 1.96 std built from the stitched std.
  """
  import healpy as hp  # pylint: disable=g-import-not-at-top
  truth = np.asarray(truth, dtype=np.float64)
  if truth.shape != (hp.nside2npix(nside),):
    raise ValueError(f'truth has shape {truth.shape}; expected a HEALPix map '
                     f'of {hp.nside2npix(nside)} pixels (RING) at the run\'s '
                     f'nside {nside}.')
  full_truth, truth = truth, truth[pixels]
  where = (mask == 1) & (truth != hp.UNSEEN) & np.isfinite(truth)
  if not where.any():
    raise ValueError('truth has no value on the footprint (every pixel there '
                     'is UNSEEN or not finite).')
  weights = where[None].astype(np.float64)
  out = {}
  for name, m in maps.items():
    if m.ndim != 1 or name in ('kappa_posterior_std', 'kappa_curved_ks_bmode'):
      continue
    out[name] = {'rmse': float(metrics.rmse(truth[None], m[None], weights)),
                 'pearson_r': float(metrics.pearson_r(truth[None], m[None],
                                                      weights))}
    full = np.full(full_truth.shape, hp.UNSEEN)
    full[pixels[where]] = m[where]
    with contextlib.suppress(ValueError):  # No seam or no interior pixel.
      out[name]['seam_ratio'] = tiling.seam_metric(tiles, full,
                                                   full_truth).ratio
  if 'kappa_posterior_std' in maps:
    mean, std = maps['kappa_posterior'], maps['kappa_posterior_std']
    for level, z in (('68', 1.0), ('95', 1.959964)):
      out['kappa_posterior'][f'coverage_{level}'] = metrics.coverage(
          truth[where], mean[where] - z * std[where], mean[where] + z * std[where])
  return out


def _display_map(nside, pixels, values, display_nside):
  """A full-sky map at ``display_nside`` (<= nside): means of the values."""
  import healpy as hp  # pylint: disable=g-import-not-at-top
  coarse = hp.ang2pix(display_nside, *hp.pix2ang(nside, pixels))
  size = hp.nside2npix(display_nside)
  count = np.bincount(coarse, minlength=size)
  total = np.bincount(coarse, weights=values, minlength=size)
  return np.where(count > 0, total / np.maximum(count, 1), hp.UNSEEN)


def _plot(path, pixels, maps, mask, footprint, tiles, nside, run_id):
  """Gnomonic (or, beyond 20 deg, Mollweide) views of the maps on the mask.

  Maps are shown at the NSIDE (<= the run's) whose pixels best fit 400
  screen pixels across the footprint.
  """
  import healpy as hp  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ra = np.array([t.ra_deg for t in tiles])
  dec = np.array([t.dec_deg for t in tiles])
  ra0, dec0 = sky.field_center(ra, dec)
  separation = np.degrees(np.arccos(np.clip(
      sky.unit_vectors(ra, dec) @ sky.unit_vectors(ra0, dec0), -1, 1)))
  half_side = max(t.npix * t.pixel_scale_arcmin for t in tiles) / 60 / 2
  radius_deg = float(separation.max()) + half_side * math.sqrt(2)
  xsize = 400
  display_nside = min(nside, tiling.nside_for_pixel_scale(
      2 * min(radius_deg, 90) * 60 / xsize))
  panels = [('Footprint (galaxies per pixel)', _display_map(
      nside, footprint[0], footprint[1], display_nside))]
  labels = {'kappa_ks': 'Kaiser-Squires (tiled)', 'kappa_wiener': 'Wiener (tiled)',
            'kappa_posterior': 'Posterior mean', 'kappa_posterior_std':
            'Posterior std', 'kappa_curved_ks': 'Kaiser-Squires (curved sky)'}
  on = mask == 1
  panels += [(label, _display_map(nside, pixels[on], maps[name][on],
                                  display_nside))
             for name, label in labels.items() if name in maps]
  fig = plt.figure(figsize=(4.5 * len(panels), 5))
  for i, (title, m) in enumerate(panels):
    seen = m[m != hp.UNSEEN]
    lo, hi = (np.percentile(seen, [1, 99.5]) if seen.size else (0, 1))
    common = dict(fig=fig.number, sub=(1, len(panels), i + 1), title=title,
                  min=lo, max=hi, notext=True, cmap='magma',
                  margins=(0.01, 0.1, 0.01, 0.1))
    if radius_deg < 20:
      hp.gnomview(m, rot=(ra0, dec0), xsize=xsize,
                  reso=2 * radius_deg * 60 / xsize, **common)
    else:
      hp.mollview(m, rot=(ra0, 0), **common)
  fig.text(0.5, 0.02, f'HEALPix nside {nside} (shown at {display_nside}), '
           f'{len(tiles)} tiles, maps on the footprint (grey: no data); run '
           f'{run_id}', ha='center')
  fig.savefig(path, metadata={'RunID': run_id})
  plt.close(fig)


def _checked_int(value, name, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}.')
  return int(value)


def _checked_settings(estimators, prior, num_samples, keep_samples, n_workers,
                      client, scheduler_address, nside, output_format):
  """Argument checks before any work; returns the estimators and prior spec."""
  import healpy as hp  # pylint: disable=g-import-not-at-top
  if output_format not in OUTPUT_FORMATS:
    raise ValueError(f'output_format must be one of {OUTPUT_FORMATS}, got '
                     f'{output_format!r}.')
  if isinstance(estimators, str):
    estimators = estimators.split(',')
  estimators = tuple(estimators)
  unknown = [e for e in estimators if e not in ESTIMATORS]
  if unknown or not estimators:
    raise ValueError(f'estimators must be a non-empty subset of {ESTIMATORS}, '
                     f'got {list(estimators)}.')
  if len(set(estimators)) != len(estimators):
    raise ValueError(f'estimators lists a name twice: {list(estimators)}.')
  if all(e in _SPHERE_ESTIMATORS for e in estimators):
    raise ValueError(f'estimators {list(estimators)} has no tile estimator; '
                     'curved_ks is made beside the tiled maps (on their '
                     'footprint): add ks, wiener or posterior.')
  _checked_int(num_samples, 'num_samples', 2)
  _checked_int(keep_samples, 'keep_samples', 0)
  if 'posterior' in estimators and keep_samples > num_samples:
    raise ValueError(f'keep_samples={keep_samples} exceeds num_samples='
                     f'{num_samples}.')
  _checked_int(n_workers, 'n_workers', 0)
  if client is not None and scheduler_address is not None:
    raise ValueError('pass either client or scheduler_address, not both.')
  if nside is not None and (isinstance(nside, bool) or
                            not hp.isnsideok(nside, nest=True)):
    raise ValueError(f'nside must be a power of 2 in [1, 2**29], got {nside!r}.')
  if 'posterior' not in estimators:
    return estimators, None
  if prior is None:
    prior = 'lognormal_128'
  if not isinstance(prior, (str, os.PathLike)):
    raise ValueError('prior must be None, "gaussian", the name of a shipped '
                     'prior or the path of a .keras prior (workers load it '
                     f'themselves), got {type(prior).__name__}.')
  prior = os.fspath(prior)
  if os.path.exists(prior):  # Workers may run in another directory.
    prior = os.path.abspath(prior)
  return estimators, prior


def _check_prior(spec, npix, pixel_scale_arcmin, allow_mismatch):
  """Loads the prior here once so that a bad prior fails before any tile."""
  from tfp_massmap import priors  # pylint: disable=g-import-not-at-top
  prior = _worker_prior(spec, npix, pixel_scale_arcmin)
  priors.check_prior(prior, npix, pixel_scale_arcmin=pixel_scale_arcmin,
                     allow_pixel_scale_mismatch=allow_mismatch or None)


def map_survey(catalog, output_dir, *, estimators=('ks', 'wiener'), npix=128,
               pixel_scale_arcmin=0.8, overlap_pix=16, nside=None,
               min_fill=0.25, prior=None, num_samples=40, num_levels=30,
               keep_samples=0, sigma_e=None, ks_smoothing_arcmin=1.0, seed=0,
               truth=None, allow_pixel_scale_mismatch=False, client=None,
               n_workers=1, scheduler_address=None, tf_threads=None,
               resume=True, overwrite=True, output_format='fits',
               progress=True):
  """Tiled mass maps of a survey catalogue, stitched onto HEALPix.

  See the module docstring for the steps, the execution modes and how the
  tiles are blended.

  Args:
    catalog: a `catalog.Catalog`, or what `read_survey_catalog` reads (a
      FITS or Parquet path, a partitioned Parquet folder, or a list of
      them, with the default column names ra, dec, e1, e2); read files
      with `read_survey_catalog` first for other column names.
    output_dir: the output folder (replaced as a whole, `outputs`); tiles
      are cached in ``tile_cache_dir(output_dir)``.
    estimators: names among ``ks``, ``wiener``, ``posterior`` (run per
      tile) and ``curved_ks`` (curved-sky Kaiser-Squires of the whole
      catalogue, written as ``kappa_curved_ks.fits`` and its B-mode map
      ``kappa_curved_ks_bmode.fits`` on the tiles' pixels; needs a tile
      estimator beside it), a sequence or a comma-separated string.
    npix: tile side in pixels.
    pixel_scale_arcmin: tile pixel side (arcmin).
    overlap_pix: overlap of neighbouring tiles (tile pixels).
    nside: HEALPix NSIDE of the products; default
      `tiling.nside_for_pixel_scale` of the pixel scale.
    min_fill: tiles with fewer than this fraction of pixels holding
      galaxies are skipped (`tiling.plan_tiles`).
    prior: the posterior's prior: None (the shipped learned prior
      ``lognormal_128``, 0.8 arcmin pixels), ``'gaussian'`` (the Gaussian
      prior of the shipped spectrum at the tile size and pixel scale), or
      a shipped name or ``.keras`` path for `priors.load_prior`. Loaded
      once per worker process.
    num_samples: posterior samples (chains) per tile, >= 2.
    num_levels: annealing noise levels of the posterior (geometric between
      the sampler's default σ_max and σ_min).
    keep_samples: stitched posterior samples to write (0: none).
    sigma_e: shape noise per ellipticity component (dimensionless); default
      sqrt(mean(e1² + e2²) / 2) over the whole catalogue (the same for
      every tile).
    ks_smoothing_arcmin: Gaussian smoothing of the tiled KS map (arcmin).
    seed: int; tile i's posterior uses the stateless seed (seed, i).
    truth: optional true κ HEALPix map (RING, at ``nside``) for RMSE and
      Pearson r in the summary (synthetic surveys).
    allow_pixel_scale_mismatch: sample although the prior was made for
      another pixel scale.
    client: a `distributed.Client` to run the tiles on (left open).
    n_workers: without ``client`` or ``scheduler_address``, the workers of
      a `LocalCluster` (>= 1), or 0 to run the tiles in this process.
    scheduler_address: address of a running Dask scheduler.
    tf_threads: TensorFlow threads per worker; default the CPU count over
      ``n_workers`` for a LocalCluster, left alone on other clusters and
      in process.
    resume: keep finished tiles of an earlier run with the same settings
      and catalogue (a different cache raises); False recomputes all.
    overwrite: whether an existing output folder of an earlier run may be
      replaced (`outputs.OutputFolder`).
    output_format: the map files: ``'fits'`` (partial-sky HEALPix FITS
      maps, ``<name>.fits``) or ``'healsparse'`` (HealSparse maps,
      ``<name>.hsp``; see the module docstring). The tiles do not depend
      on it: a rerun in the other format takes every tile from the cache.
    progress: write tiles done / total and the time left to stderr.

  Returns:
    A `SurveyResult`.

  Raises:
    ValueError: for bad arguments, a catalogue that cannot be read, a
      prior that does not fit the tiles, an output folder that cannot be
      used or a tile cache of other settings; all before any tile runs.
    TileError: when a tile task fails (finished tiles stay cached).
    pipeline.DivergenceError: when a tile's posterior chains diverged.
  """
  import healpy as hp  # pylint: disable=g-import-not-at-top
  estimators, prior_spec = _checked_settings(
      estimators, prior, num_samples, keep_samples, n_workers, client,
      scheduler_address, nside, output_format)
  folder = outputs.OutputFolder(output_dir, overwrite=overwrite,
                                own_files=_OWN_FILES)
  cat = read_survey_catalog(catalog)
  if nside is None:
    nside = tiling.nside_for_pixel_scale(pixel_scale_arcmin)
  if prior_spec is not None:
    _check_prior(prior_spec, npix, pixel_scale_arcmin,
                 allow_pixel_scale_mismatch)
  if sigma_e is None:
    sigma_e = _sigma_e(cat)
  tiles = sorted(tiling.plan_tiles(
      cat.ra, cat.dec, npix=npix, pixel_scale_arcmin=pixel_scale_arcmin,
      overlap_pix=overlap_pix, min_fill=min_fill), key=lambda t: t.index)
  if not tiles:
    raise ValueError(f'no tile of {npix}x{npix} pixels of {pixel_scale_arcmin} '
                     f'arcmin is filled to min_fill={min_fill} by the '
                     f'{len(cat.ra)} galaxies; lower min_fill or use larger '
                     'pixels.')
  settings = _TileSettings(
      estimators=tuple(e for e in estimators if e not in _SPHERE_ESTIMATORS),
      prior=prior_spec, num_samples=int(num_samples),
      num_levels=int(num_levels), seed=int(seed), sigma_e=float(sigma_e),
      ks_smoothing_arcmin=float(ks_smoothing_arcmin),
      keep_samples=int(keep_samples),
      allow_pixel_scale_mismatch=bool(allow_pixel_scale_mismatch))
  cache_dir = tile_cache_dir(output_dir)
  finished = _prepare_cache(cache_dir, {
      **settings._asdict(), 'estimators': list(settings.estimators),
      'npix': int(npix), 'pixel_scale_arcmin': float(pixel_scale_arcmin),
      'overlap_pix': int(overlap_pix), 'min_fill': float(min_fill),
      'num_tiles': len(tiles), 'catalog_sha256': _fingerprint(cat),
      'num_galaxies': len(cat.ra)}, resume)
  todo = [t for t in tiles if t.index not in finished]
  selections = tiling.galaxies_near_tiles(cat.ra, cat.dec, todo)
  jobs = [(_subset(cat, s), t) for s, t in zip(selections, todo)]
  local_cluster = client is None and scheduler_address is None
  if tf_threads is None and local_cluster and n_workers:
    tf_threads = max(1, (os.cpu_count() or 1) // n_workers)
  bar = _Progress(len(tiles), len(tiles) - len(todo), progress)
  tile_seconds = _run_tiles(jobs, settings, cache_dir, client, n_workers,
                            tf_threads, scheduler_address, progress=bar)

  pixels, maps, mask, weight = _stitch(tiles, cache_dir, nside,
                                       settings.estimators, keep_samples)
  curved_seconds = None
  if 'curved_ks' in estimators:
    began = time.perf_counter()
    maps.update(_curved_kaiser_squires(cat, nside, pixels, ks_smoothing_arcmin))
    curved_seconds = time.perf_counter() - began
  footprint = np.unique(hp.ang2pix(nside, cat.ra, cat.dec, lonlat=True),
                        return_counts=True)
  records = []
  for tile in tiles:
    with open(_tile_paths(cache_dir, tile.index)[1], encoding='utf-8') as f:
      records.append(json.load(f))
  summary = {
      'run_id': folder.run_id,
      'num_galaxies': len(cat.ra),
      'footprint_area_deg2': float((mask == 1).sum() *
                                   hp.nside2pixarea(nside, degrees=True)),
      'nside': int(nside), 'npix': int(npix),
      'pixel_scale_arcmin': float(pixel_scale_arcmin),
      'overlap_pix': int(overlap_pix), 'estimators': list(estimators),
      'sigma_e': float(sigma_e), 'seed': int(seed),
      'output_format': output_format,
      'num_tiles': len(tiles), 'num_tiles_computed': len(todo),
      'num_tiles_cached': len(tiles) - len(todo),
      'workers': (('in process' if not n_workers else
                   f'LocalCluster({n_workers})') if local_cluster else
                  scheduler_address or 'client'),
      'tile_phase_seconds': tile_seconds,
      'tiles_per_hour': (3600 * len(todo) / tile_seconds if todo else None),
      'mean_tile_seconds': float(np.mean([r['seconds'] for r in records])),
      'curved_ks_seconds': curved_seconds,
      'peak_worker_rss_mib': max(
          (r['peak_rss_mib'] for r in records if 'peak_rss_mib' in r),
          default=None),
  }
  if truth is not None:
    summary['truth'] = _truth_metrics(pixels, maps, truth, mask, tiles,
                                      nside)
  summary = pipeline.strict_json(summary)
  suffix, write_map = {'fits': ('.fits', _write_partial_map),
                       'healsparse': ('.hsp', _write_healsparse_map)}[
                           output_format]
  with folder:
    for name, values in {**maps, 'mask': mask, 'weight': weight}.items():
      write_map(folder.path_for(name + suffix), nside, pixels, values,
                folder.run_id)
    write_map(folder.path_for('footprint' + suffix), nside, *footprint,
              folder.run_id)
    with open(folder.path_for('tiles.json'), 'w', encoding='utf-8') as f:
      json.dump({'run_id': folder.run_id,
                 'tiles': pipeline.strict_json(records)}, f, indent=1,
                allow_nan=False)
    with open(folder.path_for('summary.json'), 'w', encoding='utf-8') as f:
      json.dump(summary, f, indent=2, allow_nan=False)
      f.write('\n')
    _plot(folder.path_for('maps.png'), pixels, maps, mask, footprint, tiles,
          nside, folder.run_id)
  return SurveyResult(path=folder.path, run_id=folder.run_id, nside=nside,
                      pixels=pixels, maps=maps, mask=mask, weight=weight,
                      tiles=tiles, summary=summary)

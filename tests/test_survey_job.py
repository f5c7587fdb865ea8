"""Tests of tfp_massmap.survey_job: tiled survey maps, resume, Dask workers."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import healpy as hp
import numpy as np
import pytest

from tfp_massmap import catalog
from tfp_massmap import curved_sky
from tfp_massmap import lensing
from tfp_massmap import pipeline
from tfp_massmap import sky
from tfp_massmap import survey_job
from tfp_massmap import tiling

_CENTER = (30.0, 10.0)
_GRID = 128             # global plane grid, pixels
_GRID_SCALE = 2.0       # arcmin
_HALF_ARCMIN = 36.0     # footprint half side
_NSIDE = 512
_TILES = dict(npix=32, pixel_scale_arcmin=2.0, overlap_pix=4, nside=_NSIDE)


def _smooth_field(seed):
  """A smooth Gaussian κ [N, N] on the global plane (correlation ~10′)."""
  rng = np.random.default_rng(seed)
  k = np.fft.fftfreq(_GRID, d=_GRID_SCALE)  # cycles per arcmin
  k2 = k[:, None]**2 + k[None, :]**2
  field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(_GRID, _GRID))) *
                       np.exp(-0.5 * k2 * (2 * np.pi * 6.0)**2)).real
  return 0.02 * field / field.std()


def _at(image, x_deg, y_deg):
  """Bilinear value of a global-plane image at plane coordinates (deg)."""
  u = x_deg * 60 / _GRID_SCALE + (_GRID - 1) / 2
  v = y_deg * 60 / _GRID_SCALE + (_GRID - 1) / 2
  c0, r0 = np.floor(u).astype(int), np.floor(v).astype(int)
  fu, fv = u - c0, v - r0
  return ((1 - fv) * ((1 - fu) * image[..., r0, c0] + fu * image[..., r0, c0 + 1])
          + fv * ((1 - fu) * image[..., r0 + 1, c0] +
                  fu * image[..., r0 + 1, c0 + 1]))


def tiny_survey(seed=0, sigma_e=0.0, num_galaxies=13000):
  """A 1.2°×1.2° survey of a known smooth κ: (Catalog, truth HEALPix map).

  Galaxies sit uniformly in a gnomonic square about _CENTER; their shear is
  the flat-sky shear of the field on that plane, rotated into each galaxy's
  local RA/Dec frame, plus Gaussian shape noise of ``sigma_e``.
  """
  kappa = _smooth_field(seed)
  gamma = np.asarray(lensing.shear_from_convergence(kappa))
  rng = np.random.default_rng(seed + 1)
  x, y = rng.uniform(-_HALF_ARCMIN / 60, _HALF_ARCMIN / 60,
                     size=(2, num_galaxies))
  ra, dec = sky.inverse_gnomonic(x, y, _CENTER)
  g1 = _at(gamma[..., 0], x, y)
  g2 = _at(gamma[..., 1], x, y)
  e1, e2 = sky.to_local_frame(g1, g2, ra, dec, _CENTER)
  e1 = e1 + sigma_e * rng.normal(size=num_galaxies)
  e2 = e2 + sigma_e * rng.normal(size=num_galaxies)
  cat = catalog.Catalog(ra=ra % 360, dec=dec, e1=e1, e2=e2,
                        weight=np.ones(num_galaxies))
  truth = np.full(hp.nside2npix(_NSIDE), hp.UNSEEN)
  pix = hp.query_disc(_NSIDE, hp.ang2vec(*_CENTER, lonlat=True),
                      np.radians(1.0))
  px, py = sky.gnomonic(*hp.pix2ang(_NSIDE, pix, lonlat=True), _CENTER)
  inside = (np.abs(px) < _HALF_ARCMIN / 60) & (np.abs(py) < _HALF_ARCMIN / 60)
  truth[pix[inside]] = _at(kappa, px[inside], py[inside])
  return cat, truth


@pytest.fixture(scope='module')
def survey():
  return tiny_survey(sigma_e=0.05)


def _maps(path):
  """The HEALPix products of an output folder: {file: array}."""
  return {name: hp.read_map(os.path.join(path, name), field=None)
          for name in sorted(os.listdir(path)) if name.endswith('.fits')}


def test_noise_free_survey_recovers_known_field(tmp_path):
  cat, truth = tiny_survey(sigma_e=0.0)
  result = survey_job.map_survey(
      cat, tmp_path / 'out', estimators=('ks', 'wiener'),
      ks_smoothing_arcmin=0.0, truth=truth, n_workers=0, progress=False,
      **_TILES)
  scores = result.summary['truth']
  # Measured: KS r = 0.955, Wiener r = 0.971 (tile edges limit both: with
  # 4-pixel margins a cell's edge is 4 pixels from its tile's edge).
  assert scores['kappa_ks']['pearson_r'] > 0.93, scores
  assert scores['kappa_wiener']['pearson_r'] > 0.96, scores
  assert scores['kappa_wiener']['rmse'] < 0.25 * np.std(truth[truth != hp.UNSEEN])
  assert len(result.tiles) >= 3
  assert result.summary['num_tiles_computed'] == len(result.tiles)
  # The wrong e2 sign convention anticorrelates (r = -0.21 and -0.25).
  flipped = survey_job.map_survey(
      cat._replace(e2=-cat.e2), tmp_path / 'flipped', estimators=('ks', 'wiener'),
      ks_smoothing_arcmin=0.0, truth=truth, n_workers=0, progress=False,
      **_TILES)
  assert all(v['pearson_r'] < 0 for v in flipped.summary['truth'].values())


def test_small_synthetic_survey_against_its_truth(tmp_path):
  """S1's curved-sky lognormal survey (4 deg², 288k galaxies, σ_e = 0.26)."""
  from tfp_massmap import synthetic_survey  # pylint: disable=g-import-not-at-top
  truth = synthetic_survey.small_synthetic_survey(seed=0)
  result = survey_job.map_survey(
      truth.catalog, tmp_path / 'out', estimators=('ks', 'wiener', 'curved_ks'),
      npix=32, pixel_scale_arcmin=4.0, overlap_pix=6, nside=truth.nside,
      truth=truth.kappa, n_workers=0, progress=False)
  scores = result.summary['truth']
  # The curved-sky KS product is curved_sky's map of the whole catalogue,
  # read on the stitched pixels (on 4 deg² at NSIDE 256, 8 pixels across,
  # mask leakage dominates it: r = 0.08; on 132 deg² it is 0.62).
  shear = curved_sky.healpix_shear_maps(truth.catalog, truth.nside)
  kappa_e, kappa_b = curved_sky.kaiser_squires_healpix(
      shear.gamma1, shear.gamma2, mask=shear.mask, smoothing_arcmin=1.0)
  written = hp.read_map(os.path.join(result.path, 'kappa_curved_ks.fits'))
  seen = written != hp.UNSEEN
  np.testing.assert_allclose(written[seen], kappa_e[seen], rtol=1e-6, atol=1e-8)
  bmode = hp.read_map(os.path.join(result.path, 'kappa_curved_ks_bmode.fits'))
  np.testing.assert_allclose(bmode[seen], kappa_b[seen], rtol=1e-6, atol=1e-8)
  assert 'kappa_curved_ks_bmode' not in scores
  # Measured (6 tiles): Wiener r = 0.663, RMSE 0.0060; KS r = 0.553, RMSE
  # 0.0093; seam ratios 1.04 and 0.95.
  assert scores['kappa_wiener']['pearson_r'] > 0.62, scores
  assert scores['kappa_wiener']['rmse'] < 0.8 * scores['kappa_ks']['rmse']
  assert scores['kappa_wiener']['seam_ratio'] < 1.1, scores
  assert 3.5 < result.summary['footprint_area_deg2'] < 5.0
  assert result.summary['curved_ks_seconds'] > 0


def test_products_are_the_stitched_pipeline_tiles(tmp_path, survey):
  cat, _ = survey
  result = survey_job.map_survey(
      cat, tmp_path / 'out', estimators=('ks', 'wiener'), n_workers=0,
      progress=False, **_TILES)
  sigma_e = np.sqrt(np.mean(cat.e1**2 + cat.e2**2) / 2)
  expected = []
  for tile in result.tiles:
    shear_map = tiling.bin_tile(cat, tile, sigma_e=sigma_e)
    expected.append(pipeline.run_estimators(shear_map, ['wiener'])
                    ['wiener'].kappa)
  wiener, weight = tiling.stitch_healpix(result.tiles, expected, _NSIDE)
  np.testing.assert_array_equal(result.pixels, np.flatnonzero(weight > 0))
  np.testing.assert_allclose(result.maps['kappa_wiener'],
                             wiener[result.pixels], atol=1e-6)
  np.testing.assert_allclose(result.weight, weight[result.pixels], rtol=1e-6)
  np.testing.assert_array_equal(result.full_map('kappa_wiener') != hp.UNSEEN,
                                weight > 0)
  written = _maps(result.path)
  assert sorted(written) == ['footprint.fits', 'kappa_ks.fits',
                             'kappa_wiener.fits', 'mask.fits', 'weight.fits']
  np.testing.assert_allclose(written['kappa_wiener.fits'],
                             wiener.astype(np.float32), atol=1e-7)
  footprint = written['footprint.fits']
  assert footprint[footprint != hp.UNSEEN].sum() == len(cat.ra)
  mask = written['mask.fits']
  assert set(np.unique(mask[weight > 0])) == {0.0, 1.0}
  assert 1.3 < (mask == 1).sum() * hp.nside2pixarea(_NSIDE, degrees=True) < 1.6
  index = json.loads((tmp_path / 'out' / 'tiles.json').read_text())
  assert [t['index'] for t in index['tiles']] == [t.index for t in result.tiles]
  assert index['run_id'] == result.run_id
  assert hp.read_map(os.path.join(result.path, 'kappa_ks.fits'), h=True)[1]
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert summary['num_tiles'] == len(result.tiles)
  # A process that ran TensorFlow holds well over 100 MiB.
  assert summary['peak_worker_rss_mib'] > 100
  assert (tmp_path / 'out' / 'maps.png').stat().st_size > 10_000


def test_rerun_takes_every_tile_from_the_cache(tmp_path, survey):
  cat, _ = survey
  first = survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks',),
                                n_workers=0, progress=False, **_TILES)
  cache = survey_job.tile_cache_dir(tmp_path / 'out')
  stamps = {n: os.stat(os.path.join(cache, n)).st_mtime_ns
            for n in os.listdir(cache)}
  second = survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks',),
                                 n_workers=0, progress=False, **_TILES)
  assert second.summary['num_tiles_computed'] == 0
  assert second.summary['num_tiles_cached'] == len(first.tiles)
  assert stamps == {n: os.stat(os.path.join(cache, n)).st_mtime_ns
                    for n in os.listdir(cache)}
  np.testing.assert_array_equal(first.maps['kappa_ks'], second.maps['kappa_ks'])


def test_cache_of_other_settings_is_refused(tmp_path, survey):
  cat, _ = survey
  survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks',),
                        n_workers=0, progress=False, **_TILES)
  with pytest.raises(ValueError, match=r"differ in \['estimators'\].*resume=False"):
    survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks', 'wiener'),
                          n_workers=0, progress=False, **_TILES)
  result = survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks', 'wiener'),
                                 n_workers=0, progress=False, resume=False,
                                 **_TILES)
  assert result.summary['num_tiles_cached'] == 0


_KILLED_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_survey_job import tiny_survey, _TILES
    from tfp_massmap import survey_job
    cat, _ = tiny_survey(sigma_e=0.05)
    survey_job.map_survey(cat, {out!r}, estimators=('ks', 'wiener'),
                          n_workers=0, progress=False, **_TILES)
""")


def test_killed_run_resumes_with_the_same_result(tmp_path, survey):
  cat, _ = survey
  out = str(tmp_path / 'out')
  cache = survey_job.tile_cache_dir(out)
  script = _KILLED_RUN.format(tests=os.path.dirname(__file__), out=out)
  process = subprocess.Popen([sys.executable, '-c', script])
  try:
    deadline = time.time() + 120
    while time.time() < deadline:
      done = ([n for n in os.listdir(cache) if n.endswith('.json') and
               n.startswith('tile_')] if os.path.isdir(cache) else [])
      if len(done) >= 2 or process.poll() is not None:
        break
      time.sleep(0.05)
    assert process.poll() is None, 'the run ended before it could be killed'
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
  assert not os.path.exists(out)  # Nothing written but the tile cache.
  finished = {n: os.stat(os.path.join(cache, n)).st_mtime_ns
              for n in os.listdir(cache) if n.endswith('.json') and
              n.startswith('tile_')}
  resumed = survey_job.map_survey(cat, out, estimators=('ks', 'wiener'),
                                  n_workers=0, progress=False, **_TILES)
  assert resumed.summary['num_tiles_cached'] == len(finished)
  assert resumed.summary['num_tiles_computed'] == (
      len(resumed.tiles) - len(finished))
  for name, stamp in finished.items():  # Finished tiles were not recomputed.
    assert os.stat(os.path.join(cache, name)).st_mtime_ns == stamp
  fresh = survey_job.map_survey(cat, tmp_path / 'fresh',
                                estimators=('ks', 'wiener'), n_workers=0,
                                progress=False, **_TILES)
  for name in ('kappa_ks', 'kappa_wiener'):
    np.testing.assert_array_equal(resumed.maps[name], fresh.maps[name])


def test_failed_tile_is_named_and_finished_tiles_stay_cached(
    tmp_path, survey, monkeypatch):
  cat, _ = survey
  calls = []
  run_estimators = pipeline.run_estimators

  def failing_third(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError('out of memory')
    return run_estimators(*args, **kwargs)

  monkeypatch.setattr(pipeline, 'run_estimators', failing_third)
  with pytest.raises(survey_job.TileError,
                     match=r'tile \d+ failed: RuntimeError: out of memory.*'
                     'a rerun resumes') as error:
    survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks',),
                          n_workers=0, progress=False, **_TILES)
  assert isinstance(error.value.__cause__, RuntimeError)
  assert not (tmp_path / 'out').exists()
  monkeypatch.setattr(pipeline, 'run_estimators', run_estimators)
  resumed = survey_job.map_survey(cat, tmp_path / 'out', estimators=('ks',),
                                  n_workers=0, progress=False, **_TILES)
  assert resumed.summary['num_tiles_cached'] == 2
  assert error.value.index == resumed.tiles[2].index


@pytest.mark.slow  # 33 s: two LocalClusters start TensorFlow in 3 workers.
def test_dask_workers_give_the_same_products(tmp_path, survey):
  cat, _ = survey
  kwargs = dict(estimators=('ks', 'wiener', 'posterior'), prior='gaussian',
                num_samples=4, num_levels=4, keep_samples=2, seed=3,
                progress=False, **_TILES)
  one = survey_job.map_survey(cat, tmp_path / 'one', n_workers=1, **kwargs)
  two = survey_job.map_survey(cat, tmp_path / 'two', n_workers=2, **kwargs)
  assert two.summary['workers'] == 'LocalCluster(2)'
  pids = {t['pid'] for t in json.loads(
      (tmp_path / 'two' / 'tiles.json').read_text())['tiles']}
  assert len(pids) == 2 and os.getpid() not in pids
  assert sorted(one.maps) == ['kappa_ks', 'kappa_posterior',
                              'kappa_posterior_samples', 'kappa_posterior_std',
                              'kappa_wiener']
  for name in one.maps:
    np.testing.assert_array_equal(one.maps[name], two.maps[name])
  assert one.maps['kappa_posterior_samples'].shape == (2, len(one.pixels))
  assert (one.maps['kappa_posterior_std'] > 0).all()


def test_read_survey_catalog_partitioned_parquet(tmp_path, survey):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  cat, _ = survey
  table = pa.table({'RA': cat.ra, 'DEC': cat.dec, 'g1': cat.e1, 'g2': cat.e2,
                    'band': np.where(cat.dec > 10, 'north', 'south'),
                    'extra': np.zeros_like(cat.ra)})
  pq.write_to_dataset(table, tmp_path / 'dataset', partition_cols=['band'])
  pq.write_table(table.slice(0, 0), tmp_path / 'dataset' / 'empty.parquet')
  read = survey_job.read_survey_catalog(
      tmp_path / 'dataset', ra_col='RA', dec_col='DEC', e1_col='g1',
      e2_col='g2', flip_e2=True)
  assert len(read.ra) == len(cat.ra)
  order = np.lexsort((read.dec, read.ra))
  expected = np.lexsort((cat.dec, cat.ra))
  np.testing.assert_array_equal(read.ra[order], cat.ra[expected])
  np.testing.assert_array_equal(read.e2[order], -cat.e2[expected])


def test_read_survey_catalog_list_of_fits_files(tmp_path, survey):
  import astropy.table  # pylint: disable=g-import-not-at-top
  cat, _ = survey
  half = len(cat.ra) // 2
  paths = []
  for i, part in enumerate((slice(0, half), slice(half, None))):
    paths.append(tmp_path / f'part{i}.fits')
    astropy.table.Table({'ra': cat.ra[part], 'dec': cat.dec[part],
                         'e1': cat.e1[part], 'e2': cat.e2[part],
                         'w': np.full(len(cat.ra[part]), 2.0)}).write(paths[-1])
  read = survey_job.read_survey_catalog(paths, weight_col='w')
  for got, want in zip(read[:4], cat[:4]):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(read.weight, 2.0)


def test_read_survey_catalog_errors(tmp_path, survey):
  cat, _ = survey
  with pytest.raises(FileNotFoundError, match='does not exist'):
    survey_job.read_survey_catalog(tmp_path / 'missing.parquet')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='holds no Parquet file'):
    survey_job.read_survey_catalog(tmp_path / 'empty')
  with pytest.raises(ValueError, match='list is empty'):
    survey_job.read_survey_catalog([])
  bad = cat._replace(dec=np.where(np.arange(len(cat.dec)) == 3, np.nan, cat.dec))
  with pytest.raises(ValueError, match='catalog dec holds 1 non-finite'):
    survey_job.read_survey_catalog(bad)


@pytest.mark.parametrize('kwargs, message', [
    (dict(estimators=('ks', 'sparse')), r'subset of .*\'sparse\''),
    (dict(estimators=('ks', 'ks')), 'lists a name twice'),
    (dict(estimators=('curved_ks',)), 'has no tile estimator'),
    (dict(estimators=('posterior',), num_samples=1), 'num_samples must be'),
    (dict(estimators=('posterior',), num_samples=4, keep_samples=5),
     'keep_samples=5 exceeds'),
    (dict(n_workers=-1), 'n_workers must be'),
    (dict(nside=500), 'nside must be a power of 2'),
    (dict(client=object(), scheduler_address='tcp://x:1'), 'not both'),
    (dict(estimators=('posterior',), prior=object()), 'prior must be None'),
    (dict(estimators=('posterior',)), 'pixel scale'),
    (dict(min_fill=1.0), 'no tile of 32x32'),
    (dict(output_format='hdf5'),
     r"output_format must be one of \('fits', 'healsparse'\), got 'hdf5'"),
])
def test_bad_arguments_fail_before_work(tmp_path, survey, kwargs, message):
  cat, _ = survey
  settings = {'n_workers': 0, 'progress': False, **_TILES, **kwargs}
  with pytest.raises(ValueError, match=message):
    survey_job.map_survey(cat, tmp_path / 'out', **settings)
  assert not os.path.exists(survey_job.tile_cache_dir(tmp_path / 'out'))

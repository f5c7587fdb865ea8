"""The main job end to end: embedded default and catalogue mode."""

import importlib.util
import json
import pathlib

from absl import app
from absl import flags
import astropy.table
import numpy as np
import pytest

from tfp_massmap import catalog

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'examples' / 'map_shear.py'


@pytest.fixture(scope='module')
def map_shear():
  spec = importlib.util.spec_from_file_location('map_shear_example', _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(module, *args):
  flags.FLAGS.unparse_flags()
  argv = flags.FLAGS(['map_shear.py', *args])
  module.main(argv)


def test_embedded_default_writes_maps_summary_and_figure(map_shear, tmp_path):
  _run(map_shear, f'--output_dir={tmp_path}', '--prior=gaussian', '--num_samples=8',
       '--num_levels=12')
  summary = json.loads((tmp_path / 'summary.json').read_text())
  for name in ('ks', 'wiener', 'posterior'):
    entry = summary['methods'][name]
    assert 0 < entry['rmse'] < 0.05 and 0 < entry['pearson_r'] < 1
  assert summary['methods']['wiener']['converged']
  post = summary['methods']['posterior']
  assert 0 < post['coverage_68'] < post['coverage_95'] <= 1
  assert post['score_evaluations_per_sample'] > 0
  samples, _, _ = catalog.read_map_fits(tmp_path / 'kappa_posterior_samples.fits')
  assert samples.shape == (8, 128, 128)
  assert (tmp_path / 'maps.png').stat().st_size > 10_000
  truth, wcs, _ = catalog.read_map_fits(tmp_path / 'kappa_truth.fits')
  assert truth.shape == (128, 128) and wcs.has_celestial
  # The Wiener map is the posterior mean under a Gaussian prior with the
  # field's spectrum: it must beat the smoothed Kaiser-Squires map here.
  assert summary['methods']['wiener']['rmse'] < summary['methods']['ks']['rmse']


def test_catalogue_mode_and_no_partial_output(map_shear, tmp_path):
  rng = np.random.default_rng(0)
  n_gal = 20000
  table = astropy.table.Table({
      'RA': 150.0 + rng.uniform(-0.2, 0.2, n_gal),
      'DEC': 2.0 + rng.uniform(-0.2, 0.2, n_gal),
      'E1': 0.3 * rng.standard_normal(n_gal),
      'E2': 0.3 * rng.standard_normal(n_gal),
  })
  path = tmp_path / 'cat.fits'
  table.write(path)
  out = tmp_path / 'out'
  common = [f'--catalog={path}', '--ra_col=RA', '--dec_col=DEC', '--e1_col=E1',
            '--e2_col=E2', '--npix=32', '--pixel_scale_arcmin=0.7', '--methods=ks']
  _run(map_shear, *common, f'--output_dir={out}')
  kappa, wcs, _ = catalog.read_map_fits(out / 'kappa_ks.fits')
  assert kappa.shape == (32, 32)
  assert not (out / 'kappa_truth.fits').exists()
  summary = json.loads((out / 'summary.json').read_text())
  assert 'rmse' not in summary['methods']['ks']
  # An existing output without --overwrite raises before anything is written.
  before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
  with pytest.raises(app.UsageError, match='exist'):
    _run(map_shear, *common, f'--output_dir={out}', '--nooverwrite')
  assert before == {p: p.stat().st_mtime_ns for p in out.iterdir()}
  with pytest.raises(app.UsageError, match='unknown --methods'):
    _run(map_shear, *common, '--methods=ks,glimpse', f'--output_dir={tmp_path / "x"}')
  assert not (tmp_path / 'x').exists()
  # A catalogue outside the requested field fails before writing anything.
  empty = tmp_path / 'empty_out'
  with pytest.raises(ValueError):
    _run(map_shear, *common, '--center_ra=10', '--center_dec=-40',
         f'--output_dir={empty}')
  assert not empty.exists()

"""The main job end to end: embedded default and catalogue mode.

Also what a user sees for a bad flag (an error naming it, exit code 2,
before any estimator runs) and the divergence policy (exit code 3 and
nothing written, or --drop_diverged_chains).
"""

import json

from absl import app
from absl import flags
import astropy.io.fits
import astropy.table
import numpy as np
import pytest

from tfp_massmap import catalog

import conftest



def _run(module, *args):
  flags.FLAGS.unparse_flags()
  argv = flags.FLAGS(['map_shear.py', *args])
  module.main(argv)


def test_embedded_default_writes_maps_summary_and_figure(map_shear, tmp_path):
  _run(map_shear, f'--output_dir={tmp_path}', '--prior=gaussian', '--num_samples=8',
       '--num_levels=12', '--statistics', '--peak_threshold_snr=2.5')
  summary = json.loads((tmp_path / 'summary.json').read_text())
  stats = json.loads((tmp_path / 'statistics.json').read_text())
  assert stats['run_id'] == summary['run_id']
  power = {name: np.array(stats['methods'][name]['power_spectrum'])
           for name in ('ks', 'wiener', 'posterior')}
  band = stats['posterior_bands']['power_spectrum']
  # A single Wiener map lacks the small-scale power that each posterior
  # sample has: at the highest ℓ it lies far below the samples' band.
  assert power['wiener'][-1] < 0.5 * np.array(band['lower_95'])[-1]
  assert np.all(np.array(band['lower_68']) <= np.array(band['upper_68']))
  peaks = astropy.table.Table.read(tmp_path / 'peaks.fits')
  assert stats['peaks']['num_peaks'] == len(peaks) > 0
  assert set(peaks.colnames) >= {'x', 'y', 'ra_deg', 'dec_deg', 'snr',
                                 'probability', 'height_lower'}
  assert np.all(peaks['snr'] > 2.5) and np.all(peaks['probability'] <= 1)
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


def test_joint_sigma8_prior_writes_the_parameter_posterior(map_shear, tmp_path):
  """--prior=gaussian_sigma8: σ8 samples in parameters.fits, their summary in
  summary.json and the corner plot, on the masked embedded default (the
  sampler's Gibbs route)."""
  _run(map_shear, f'--output_dir={tmp_path}', '--prior=gaussian_sigma8',
       '--methods=posterior', '--num_samples=8', '--num_levels=6',
       '--num_sweeps=2', '--sweep_num_levels=6')
  summary = json.loads((tmp_path / 'summary.json').read_text())
  post = summary['methods']['posterior']
  table = astropy.table.Table.read(tmp_path / 'parameters.fits')
  sigma8 = np.asarray(table['sigma8'])
  assert sigma8.shape == (8,) and np.all((sigma8 > 0.6) & (sigma8 < 1.0))
  assert post['parameters']['sigma8']['mean'] == pytest.approx(sigma8.mean(),
                                                               rel=1e-6)
  assert post['theta_posterior']['num_sweeps'] == 2
  with astropy.io.fits.open(tmp_path / 'parameters.fits') as hdus:
    assert hdus[1].header['RUNID'] == summary['run_id']
  assert (tmp_path / 'parameters.png').stat().st_size > 5_000


def test_shipped_joint_prior_writes_omega_m_and_sigma8(map_shear,
                                                      small_catalogue,
                                                      tmp_path):
  """--prior=cosmo_joint on a 32² catalogue of 0.8-arcmin pixels: Ωm and σ8
  samples inside the prior box in parameters.fits, summarised in
  summary.json, and the corner plot (the θ draws by quadrature)."""
  flags_, _ = small_catalogue
  flags_ = [f for f in flags_ if not f.startswith('--pixel_scale_arcmin')]
  _run(map_shear, *flags_, '--pixel_scale_arcmin=0.8',
       f'--output_dir={tmp_path}', '--prior=cosmo_joint',
       '--methods=posterior', '--num_samples=8', '--num_levels=6',
       '--num_sweeps=2', '--sweep_num_levels=6')
  summary = json.loads((tmp_path / 'summary.json').read_text())
  post = summary['methods']['posterior']
  table = astropy.table.Table.read(tmp_path / 'parameters.fits')
  for name, (low, high) in (('omega_m', (0.2, 0.4)), ('sigma8', (0.6, 1.0))):
    values = np.asarray(table[name])
    assert values.shape == (8,) and np.all((values > low) & (values < high))
    assert post['parameters'][name]['mean'] == pytest.approx(values.mean(),
                                                             rel=1e-6)
  assert post['theta_posterior']['method'] == 'grid'
  assert (tmp_path / 'parameters.png').stat().st_size > 5_000


@pytest.mark.parametrize('prior, map_size, name', [
    ('cosmo_joint', 128, 'cosmo_joint_128'),  # the demo's size
    ('cosmo_joint', 32, 'cosmo_joint_32'),
    ('cosmo_joint', 64, 'cosmo_joint_32'),  # none for 64²: warns when run
    ('cosmo_marginal', 128, 'cosmo_marginal_32'),
    ('learned', 128, 'lognormal_128'),
])
def test_prior_flag_takes_the_joint_prior_of_the_map_size(map_shear, prior,
                                                          map_size, name):
  assert map_shear._shipped_name(prior, map_size) == name  # pylint: disable=protected-access


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


@pytest.fixture(scope='module')
def small_catalogue(tmp_path_factory):
  """A FITS catalogue filling a 32² grid, the flags to bin it, and its path."""
  path = conftest.write_catalogue(
      tmp_path_factory.mktemp('catalogue') / 'cat.fits', seed=1)
  return [f'--catalog={path}', '--npix=32', '--pixel_scale_arcmin=0.7'], path


def _no_work(module, monkeypatch):
  def fail(*_):
    raise AssertionError('the estimators ran although the input was bad')
  monkeypatch.setattr(module, '_run_methods', fail)


@pytest.mark.parametrize('args, message', [
    (['--methods='], '--methods is empty'),
    (['--methods=ks,ks'], "lists ['ks'] more than once"),
    (['--methods=ks', '--num_samples=4'], "['--num_samples'] apply to the posterior"),
    (['--methods=ks', '--drop_diverged_chains'], 'apply to the posterior'),
    (['--methods=ks', '--tv_regularisation=2'], '--tv_regularisation applies to'),
    (['--methods=ks', '--pixel_scale_arcmin=-1'], '--pixel_scale_arcmin must be'),
    (['--methods=ks', '--npix=0'], '--npix must be >= 1'),
    (['--methods=ks', '--sigma_e=0'], '--sigma_e must be a finite number > 0'),
    (['--methods=ks', '--ks_smoothing_arcmin=nan'], '--ks_smoothing_arcmin must'),
    (['--methods=ks', '--center_ra=150'], '--center_ra and --center_dec go together'),
    (['--methods=ks', '--center_ra=150', '--center_dec=95'], '|Dec| <= 90'),
    (['--methods=ks', '--seed=-1'], '--seed must be >= 0'),
    (['--methods=ks', '--demo_index=3'], '--demo_index selects the embedded default'),
    (['--methods=ks', '--hdu=7'], 'has no HDU 7'),
    (['--methods=ks', '--clusters=/nonexistent/clusters.txt'], '--clusters='),
    (['--methods=ks', '--peak_threshold_snr=4'], 'apply to --statistics'),
    (['--methods=ks', '--statistics', '--peak_match_radius_arcmin=0'],
     '--peak_match_radius_arcmin must be a finite number > 0'),
    (['--methods=ks', '--cluster_min_m500=5'], '--cluster_min_m500 applies to'),
    (['--methods=ks', '--npix=1000000'], 'GiB of memory; this machine has'),
    (['--prior=gaussian', '--num_samples=1'], '--num_samples must be >= 2'),
    (['--prior=gaussian', '--step_size_factor=2'], '--step_size_factor must be in (0, √2'),
    (['--prior=gaussian', '--step_size_factor=0'], '--step_size_factor must be in'),
    (['--prior=gaussian', '--num_levels=1'], '--num_levels'),
    (['--prior=gaussian', '--num_leapfrog_steps=0'], '--num_leapfrog_steps must'),
    (['--prior=gaussian', '--prior_path=x.keras'], 'either --prior or --prior_path'),
    # The learned prior was trained on 0.8 arcmin pixels; the grid has 0.7.
    ([], 'the data have 0.7 arcmin pixels but the prior is valid at 0.8 arcmin'),
    (['--pixel_scale_arcmin=0.8', '--npix=36'],
     '--npix=36: the prior needs maps whose size is divisible by its '
     'size_divisor = 8'),
])
def test_bad_flags_fail_before_work(map_shear, small_catalogue, tmp_path,
                                    monkeypatch, args, message):
  flags_, _ = small_catalogue
  _no_work(map_shear, monkeypatch)
  out = tmp_path / 'out'
  with pytest.raises(map_shear.InputError) as error:
    _run(map_shear, *flags_, *args, f'--output_dir={out}')
  assert message in str(error.value)
  assert error.value.exitcode == 2
  assert list(tmp_path.iterdir()) == []


def test_catalogue_flags_without_a_catalogue_fail(map_shear, tmp_path,
                                                  monkeypatch):
  _no_work(map_shear, monkeypatch)
  with pytest.raises(map_shear.InputError, match=r"\['--sigma_e', '--npix'\] "
                     'apply to a catalogue'):
    _run(map_shear, '--npix=64', '--sigma_e=0.3', f'--output_dir={tmp_path}/o')


def test_non_keras_prior_fails_before_sampling_naming_the_file(
    map_shear, small_catalogue, tmp_path, monkeypatch, capsys):
  flags_, catalogue_path = small_catalogue
  _no_work(map_shear, monkeypatch)
  flags.FLAGS.unparse_flags()
  argv = flags.FLAGS(['map_shear.py', *flags_, '--pixel_scale_arcmin=0.8',
                      f'--prior_path={catalogue_path}',
                      f'--output_dir={tmp_path / "out"}'])
  assert map_shear._exit_code_main(argv) == 2  # pylint: disable=protected-access
  err = capsys.readouterr().err
  assert f'--prior_path={catalogue_path}' in err and 'not a Keras archive' in err
  assert not (tmp_path / 'out').exists()


def test_allow_prior_pixel_scale_mismatch_passes_validation(
    map_shear, small_catalogue, tmp_path, monkeypatch):
  flags_, _ = small_catalogue
  _no_work(map_shear, monkeypatch)
  with pytest.raises(AssertionError, match='the estimators ran'):
    _run(map_shear, *flags_, '--allow_prior_pixel_scale_mismatch',
         f'--output_dir={tmp_path / "out"}')


def _diverging(monkeypatch, num_diverged):
  """Makes sample_posterior report its first ``num_diverged`` chains diverged."""
  from tfp_massmap import posterior  # pylint: disable=g-import-not-at-top
  real = posterior.sample_posterior

  def sample(*args, **kwargs):
    result = real(*args, **kwargs)
    chains = list(range(num_diverged))
    return result._replace(diagnostics=dict(
        result.diagnostics, num_diverged_chains=num_diverged,
        diverged_chains=chains))

  monkeypatch.setattr(posterior, 'sample_posterior', sample)


def test_diverged_chains_exit_3_and_write_nothing(map_shear, small_catalogue,
                                                  tmp_path, monkeypatch, capsys):
  flags_, _ = small_catalogue
  out = tmp_path / 'out'
  _run(map_shear, *flags_, '--methods=ks', f'--output_dir={out}')
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  _diverging(monkeypatch, 1)
  posterior_flags = ['--methods=ks,posterior', '--prior=gaussian',
                     '--num_samples=3', '--num_levels=2', f'--output_dir={out}']
  flags.FLAGS.unparse_flags()
  argv = flags.FLAGS(['map_shear.py', *flags_, *posterior_flags])
  assert map_shear._exit_code_main(argv) == 3  # pylint: disable=protected-access
  err = capsys.readouterr().err
  assert '1 of 3 posterior chains diverged' in err
  assert 'smaller --step_size_factor' in err and 'Nothing was written' in err
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before
  assert [p.name for p in tmp_path.iterdir()] == ['out']
  # With --drop_diverged_chains: the other two chains, and the counts.
  _run(map_shear, *flags_, *posterior_flags, '--drop_diverged_chains')
  summary = json.loads((out / 'summary.json').read_text())
  entry = summary['methods']['posterior']
  assert entry['num_diverged_chains'] == 1 and entry['diverged_chains'] == [0]
  assert entry['num_dropped_chains'] == 1 and entry['dropped_chains'] == [0]
  assert entry['num_samples_kept'] == 2
  samples, _, _ = catalog.read_map_fits(out / 'kappa_posterior_samples.fits')
  assert samples.shape == (2, 32, 32)
  # Too few chains left even after dropping: exit 3 as well.
  _diverging(monkeypatch, 2)
  with pytest.raises(map_shear.DivergenceError, match='Only 1 chain'):
    _run(map_shear, *flags_, *posterior_flags, '--drop_diverged_chains')
  assert json.loads((out / 'summary.json').read_text()) == summary


def test_catalogue_flags_reach_the_binning(map_shear, tmp_path):
  rng = np.random.default_rng(2)

  def table(n_gal, n_unphysical):
    e = 0.2 * rng.standard_normal((2, n_gal))
    e[0, :n_unphysical] = 1.5  # |e| >= 1
    return astropy.table.Table({
        'ra': 150.0 + rng.uniform(-0.2, 0.2, n_gal),
        'dec': 2.0 + rng.uniform(-0.2, 0.2, n_gal), 'e1': e[0], 'e2': e[1]})

  path = tmp_path / 'two_tables.fits'
  astropy.io.fits.HDUList([
      astropy.io.fits.PrimaryHDU(),
      astropy.io.fits.table_to_hdu(table(20000, 0)),
      astropy.io.fits.table_to_hdu(table(15000, 30))]).writeto(path)
  common = [f'--catalog={path}', '--npix=32', '--pixel_scale_arcmin=0.7',
            '--center_ra=150', '--center_dec=2', '--methods=ks']

  def run(*args):
    out = tmp_path / 'out'
    _run(map_shear, *common, *args, f'--output_dir={out}')
    noise, _, _ = catalog.read_map_fits(out / 'noise_std.fits')
    mask, _, _ = catalog.read_map_fits(out / 'mask.fits')
    return json.loads((out / 'summary.json').read_text())['input'], noise, mask > 0

  described, _, _ = run()
  assert described.endswith('(20000 galaxies)')  # the first table HDU
  with pytest.warns(UserWarning, match='30 with'):
    described, noise_half, observed = run('--hdu=2', '--sigma_e=0.5')
  assert described.endswith('(14970 galaxies)')  # |e| >= 1 dropped
  described, noise_quarter, _ = run('--hdu=2', '--sigma_e=0.25',
                                    '--keep_unphysical_ellipticities')
  assert described.endswith('(15000 galaxies)')
  # σ_e / sqrt(N_p) per pixel: the noise map scales with --sigma_e (the
  # pixels of the 30 kept galaxies have one more galaxy).
  ratio = noise_half[observed] / noise_quarter[observed]
  assert np.mean(np.isclose(ratio, 2, rtol=1e-5)) > 0.9
  assert np.all((ratio >= 2) & (ratio < 2.2))

"""The closed forms of benchmarks/bench_joint_posterior.py, on 16² maps.

The benchmark's exact σ8 posterior, Wiener mean and std and Fisher width
rest on the shear being Fourier diagonal for a full mask and white noise;
here they are checked against dense float64 references
(`testing.dense_matrix`, `testing.exact_gaussian_posterior`).
"""

import numpy as np
import pytest
import tensorflow as tf

import conftest
from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal_cosmology
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import testing
from tfp_massmap.priors import gaussian

N = 16
PIXEL_ARCMIN = 3.2
NOISE = 0.008
SIGMA8 = 0.75
BOUNDS = (0.6, 1.0)
FIDUCIAL = 0.8159

bench = conftest.load_script('benchmarks/bench_joint_posterior.py',
                              'bench_joint_posterior')


@pytest.fixture(scope='module')
def problem():
  ell, cl = cosmology.cosmos_convergence_cl()
  spectrum = gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, N, PIXEL_ARCMIN, dtype=tf.float64).spectrum.numpy()
  signal = (SIGMA8 / FIDUCIAL)**2 * spectrum
  truth = gaussian.GaussianPrior(signal).sample(seed=(5, 0)).numpy()
  ones = np.ones([N, N])
  shear = likelihood.ShearLikelihood(truth, NOISE * ones, ones).sample(
      seed=(5, 1)).numpy()
  return dict(spectrum=spectrum, signal=signal, shear=shear)


def test_exact_sigma8_posterior_matches_a_dense_likelihood(problem):
  grid, weights = bench.exact_sigma8_posterior(
      bench.mode_powers(problem['shear']), problem['spectrum'], NOISE**2,
      BOUNDS, FIDUCIAL)
  # Dense: γ | σ8 ~ N(0, A M C Mᵀ + σ² I), 2 N² shear values.
  operator = testing.dense_matrix(lensing.shear_from_convergence, N)
  covariance = testing.dense_matrix(
      lambda x: gaussian.fourier_filter(x, problem['spectrum']), N)
  eigenvalues, vectors = np.linalg.eigh(operator @ covariance @ operator.T)
  power = (vectors.T @ problem['shear'].reshape(-1))**2
  variance = ((grid[:, None] / FIDUCIAL)**2 * np.maximum(eigenvalues, 0.) +
              NOISE**2)
  log_like = -0.5 * np.sum(power / variance + np.log(variance), axis=1)
  dense = np.exp(log_like - log_like.max())
  dense /= dense.sum()
  np.testing.assert_allclose(weights, dense, atol=1e-6 * dense.max())
  summary = bench.grid_summary(grid, weights, SIGMA8)
  # 255 modes: σ_F ≈ σ8 / √(2 · 255 · signal fraction²), about 0.04.
  sigma_f = bench.fisher_sigma(problem['spectrum'], NOISE**2, SIGMA8,
                               FIDUCIAL)
  assert 0.8 < summary['std'] / sigma_f < 1.25
  assert abs(summary['mean'] - SIGMA8) < 3 * sigma_f
  assert summary['covered_95'] == (abs(summary['cdf_at_truth'] - 0.5) <=
                                   0.475)


def test_fisher_width_without_noise_is_sigma8_over_root_two_modes(problem):
  modes = np.count_nonzero(problem['spectrum'] > 0)
  assert modes == N**2 - 1
  np.testing.assert_allclose(
      bench.fisher_sigma(problem['spectrum'], 0., SIGMA8, FIDUCIAL),
      SIGMA8 / np.sqrt(2. * modes), rtol=1e-12)
  # Noise only widens it.
  assert bench.fisher_sigma(problem['spectrum'], NOISE**2, SIGMA8,
                            FIDUCIAL) > SIGMA8 / np.sqrt(2. * modes)


def test_wiener_mean_and_std_are_the_exact_gaussian_posterior(problem):
  data = shear_map_lib.ShearMap(
      shear=problem['shear'], noise_std=np.full([N, N], NOISE),
      mask=np.ones([N, N]), pixel_scale_arcmin=PIXEL_ARCMIN)
  mean, covariance = testing.exact_gaussian_posterior(
      data, gaussian.GaussianPrior(problem['signal'],
                                   pixel_scale_arcmin=PIXEL_ARCMIN))
  kappa_e, _ = lensing.kaiser_squires(tf.constant(problem['shear']))
  np.testing.assert_allclose(
      bench.wiener_mean(kappa_e.numpy(), problem['signal'], NOISE**2), mean,
      atol=1e-6 * np.abs(mean).max())
  np.testing.assert_allclose(
      bench.wiener_std(problem['signal'], NOISE**2),
      np.sqrt(np.diag(covariance)), rtol=1e-6)


def test_rank_histogram_counts_and_refuses_unequal_bins():
  counts, p_value = bench.rank_histogram([0, 7, 8, 63, 63, 32], 63, 8)
  np.testing.assert_array_equal(counts, [2, 1, 0, 0, 1, 0, 0, 2])
  assert 0. < p_value < 1.
  with pytest.raises(ValueError, match=r'rank_bins=10 must divide '
                     r'num_chains \+ 1 = 64'):
    bench.rank_histogram([0], 63, 10)


def test_paired_kappa_pairs_maps_by_seed():
  """Differences and ratios are taken map by map on the seeds both runs
  hold, against the same arm and the reference's exact arm."""
  def record(seed, oracle, exact=None):
    r = {'seed': seed, 'oracle': dict(coverage_68=oracle, coverage_95=0.95,
                                      rmse=oracle)}
    if exact is not None:
      r['exact'] = dict(coverage_68=exact, coverage_95=0.9, rmse=exact)
    return r
  reference = [record(s, 0.5 + 0.1 * s, 0.4 + 0.1 * s) for s in range(4)]
  # A map of a run without the exact arm pairs for oracle − oracle only.
  reference.append(record(5, 1.0))
  # Seed 7 is not in the reference, and the order differs.
  records = [record(s, 0.52 + 0.1 * s) for s in (3, 1, 7, 5, 0)]
  rows = bench.paired_kappa(records, reference)
  assert [(r['arm'], r['reference_arm']) for r in rows] == [
      ('oracle', 'oracle'), ('oracle', 'exact')]
  same, exact = rows
  assert same['num_maps'] == 4 and exact['num_maps'] == 3
  np.testing.assert_allclose(same['coverage_68_difference'], 0.02)
  np.testing.assert_allclose(same['coverage_68_difference_error'], 0.,
                             atol=1e-12)
  np.testing.assert_allclose(exact['coverage_68_difference'], 0.12)
  np.testing.assert_allclose(exact['coverage_95_difference'], 0.05)
  ratios = [(0.52 + 0.1 * s) / (0.4 + 0.1 * s) for s in (3, 1, 0)]
  np.testing.assert_allclose(exact['rmse_ratio'], np.mean(ratios))
  np.testing.assert_allclose(exact['rmse_ratio_median'], np.median(ratios))
  assert '| oracle − exact | 3 |' in bench.markdown_paired(rows)
  with pytest.raises(ValueError, match='share no map'):
    bench.paired_kappa([record(9, 0.5)], reference)


def test_paired_kappa_pairs_the_joint_arm_with_the_exact_joint_reference():
  """A reference run of the exact arms alone (--arms=exact_joint) pairs
  with a saved run's joint arm map by map."""
  def scores(value):
    return dict(coverage_68=value, coverage_95=0.9, rmse=value)
  # True σ8 0.62, 0.65 (low third) and 0.95 (high third).
  records = [{'seed': s, 'sigma8': {'truth': sigma8},
              'joint': scores(0.7 + 0.01 * s), 'oracle': scores(0.6)}
             for s, sigma8 in enumerate((0.62, 0.65, 0.95))]
  reference = [{'seed': s, 'exact_joint': scores(0.68)} for s in range(3)]
  rows = bench.paired_kappa(records, reference)
  assert [(r['arm'], r['reference_arm']) for r in rows] == [
      ('joint', 'exact_joint'), ('oracle', 'exact_joint')]
  np.testing.assert_allclose(rows[0]['coverage_68_difference'], 0.03)
  np.testing.assert_allclose(rows[1]['rmse_ratio'], 0.6 / 0.68)
  low, middle, high = rows[0]['thirds']
  assert (low['num_maps'], middle['num_maps'], high['num_maps']) == (2, 0, 1)
  np.testing.assert_allclose(low['coverage_68_difference'], 0.025)
  np.testing.assert_allclose(high['coverage_68_difference'], 0.04)
  assert '+0.0250 ± 0.0050 (2)' in bench.markdown_paired(rows)


def test_learned_arms_defaults_and_refusals():
  assert bench.learned_arms(None, False, 0) == ('joint', 'oracle', 'fixed')
  assert bench.learned_arms(None, True, 4) == (
      'joint', 'oracle', 'fixed', 'marginal', 'exact')
  # Table order, whatever the order asked.
  assert bench.learned_arms(['exact_joint', 'oracle'], False, 8) == (
      'oracle', 'exact_joint')
  with pytest.raises(ValueError, match=r"\['wiener'\] unknown"):
    bench.learned_arms(['joint', 'wiener'], False, 0)
  with pytest.raises(ValueError, match='marginal_network'):
    bench.learned_arms(['joint', 'marginal'], False, 0)
  with pytest.raises(ValueError, match=r"\['exact_joint'\] need "
                     r'--exact_chains >= 2, got 0'):
    bench.learned_arms(['exact_joint'], False, 0)
  with pytest.raises(ValueError, match='must hold joint or exact_joint'):
    bench.learned_arms(['oracle', 'exact'], False, 8)


def test_learned_summary_of_an_exact_joint_run_has_no_learned_ratios():
  def record(seed, sigma8, coverage):
    theta = dict(truth=sigma8, rank=3, mean=sigma8, std=0.05,
                 fisher_std=0.06, fisher_std_conditional=0.04,
                 covered_68=True, covered_95=True)
    return dict(seed=seed, omega_m=dict(theta, truth=0.3, mean=0.3),
                sigma8=theta, theta_from='exact_joint', num_diverged=0,
                would_be_acceptance=None, seconds=60.,
                exact_joint=dict(coverage_68=coverage, coverage_95=0.95,
                                 rmse=0.01))
  # Two maps in the low σ8 third, one in the high one.
  records = [record(0, 0.62, 0.70), record(1, 0.65, 0.74),
             record(2, 0.95, 0.66)]
  summary = bench.summarise_learned(records, num_chains=7, num_bins=8)
  assert summary['arms'] == ['exact_joint']
  assert 'joint_over_oracle_rmse' not in summary
  low, middle, high = summary['thirds']
  assert (low['num_maps'], middle['num_maps'], high['num_maps']) == (2, 0, 1)
  np.testing.assert_allclose(low['exact_joint_coverage_68'], 0.72)
  np.testing.assert_allclose(high['exact_joint_coverage_68'], 0.66)
  table = bench.markdown_learned(summary, 7)
  assert 'draws of the exact joint posterior' in table
  assert 'κ RMSE ×10³: exact_joint |' in table
  assert 'joint / oracle' not in table


def test_power_spectrum_summary_is_the_closed_form_and_is_tabled():
  # A Gaussian field of known θ seen through white noise: the summary's
  # means and stds are those of the exact Gaussian-field posterior on a
  # dense grid (numpy, mode by mode), and the learned summary tables the
  # per-map std ratio against it.
  n, pixel, noise = 16, 3.2, 0.01
  theta = np.array([0.31, 0.78])
  field = lognormal_cosmology.CosmoLognormalField(n, pixel, gaussian=True)
  kappa = field.convergence_from_white(
      np.random.default_rng(4).standard_normal((n, n)), theta).numpy()
  ones = np.ones([n, n])
  shear = likelihood.ShearLikelihood(kappa, noise * ones, ones).sample(
      seed=(4, 1)).numpy()
  data = shear_map_lib.ShearMap(shear=shear, noise_std=noise * ones,
                                mask=ones, pixel_scale_arcmin=pixel)
  like = power_spectrum_likelihood.PowerSpectrumLikelihood(n, pixel)
  got = bench.power_spectrum_summary(like, data, noise, theta)
  kappa_e, _ = lensing.kaiser_squires(tf.constant(shear, tf.float64))
  power = np.abs(np.fft.fft2(kappa_e.numpy(), norm='ortho'))**2
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  axes = [lo + (np.arange(81) + 0.5) * (hi - lo) / 81 for lo, hi in bounds]
  grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 2)
  variance = field.target_power_grid(grid).numpy() + noise**2
  log_post = -0.5 * np.sum((power / variance + np.log(variance))
                           .reshape(len(grid), -1)[:, 1:], -1)
  weight = np.exp(log_post - log_post.max())
  weight /= weight.sum()
  for d, name in enumerate(cosmology.COSMO_PARAMETER_NAMES):
    mean = weight @ grid[:, d]
    np.testing.assert_allclose(got[name]['mean'], mean, rtol=1e-7)
    # Each cell's mass spread uniformly across it: + width² / 12.
    width = np.diff(bounds[d])[0] / 81
    np.testing.assert_allclose(got[name]['std'], np.sqrt(
        weight @ (grid[:, d] - mean)**2 + width**2 / 12), rtol=1e-7)
    cdf = np.interp(theta[d], np.append(axes[d] - width / 2, bounds[d][1]),
                    np.append(0., np.cumsum(weight.reshape(81, 81).sum(
                        axis=1 - d))))
    assert got[name]['covered_68'] == (abs(cdf - 0.5) <= 0.34)
    assert got[name]['covered_95'] == (abs(cdf - 0.5) <= 0.475)

  def record(seed, std):
    part = dict(truth=0.3, rank=3, mean=0.3, std=std, fisher_std=0.06,
                fisher_std_conditional=0.04, covered_68=True, covered_95=True,
                power_spectrum=dict(mean=0.3, std=0.04, covered_68=True,
                                    covered_95=seed > 0))
    return dict(seed=seed, omega_m=part, sigma8=dict(part, truth=0.8),
                num_diverged=0, would_be_acceptance=None, seconds=1.)
  summary = bench.summarise_learned([record(0, 0.04), record(1, 0.06)],
                                    num_chains=7, num_bins=8)
  spectrum = summary['parameters']['sigma8']['power_spectrum']
  np.testing.assert_allclose(spectrum['std_ratio'], 1.25)  # (1 + 1.5) / 2
  np.testing.assert_allclose(spectrum['coverage_95'], 0.5)
  assert 'power-spectrum posterior on the same maps' in bench.markdown_learned(
      summary, 7)

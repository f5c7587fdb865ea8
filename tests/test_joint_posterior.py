"""The joint posterior p(κ, A | γ) of the Gaussian amplitude prior, exactly.

With p(κ | A) = N(0, A C) the data are Gaussian given A,
γ | A ~ N(0, A M C Mᵀ + σ_pix² I) (M the dense shear operator, C the
fiducial pixel covariance), so the marginal posterior p(A | γ) is exact on a
1-D grid: the reference here is a dense float64 eigendecomposition of
M C Mᵀ on a 16² map (512 shear values), independent of the package's
Fourier-space code. Given A, κ is Gaussian with the Wiener mean and
covariance, diagonal in Fourier space for the full mask and white noise
used here: the κ samples, whitened with the moments at their own A, must be
N(0, 1).

The known-answer problem is in the regime the sampler handles (noise
σ_pix = 0.005 against pixel signal std 0.015 at A = 1: most modes measured);
where noise dominates many modes the (κ, A) posterior is a funnel that the
annealing crosses slowly (tfp_massmap.joint_posterior docstring).
"""

import types
import warnings

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import joint_posterior
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import posterior
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import testing
from tfp_massmap import theta_posterior
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.mcmc import results
from tfp_massmap.priors import conditional
from tfp_massmap.priors import gaussian

N = 16
PIXEL_ARCMIN = 3.2
NOISE = 0.005
BOUNDS = (0.2, 5.)
A_TRUE = 1.

# Measured on this problem (and on A_true = 0.5 and 2 maps): amplitude mean
# within 2 Monte Carlo errors of the exact one, std within 6 %.
SETTINGS = dict(schedule=GeometricSchedule(0.05, 1e-3, num_levels=40),
                num_final_steps=150, num_leapfrog_steps=5,
                step_size_factor=1.)


def _make_problem(noise_level):
  ell, cl = cosmology.cosmos_convergence_cl()
  fiducial64 = gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, N, PIXEL_ARCMIN, dtype=tf.float64)
  truth = gaussian.GaussianPrior(A_TRUE * fiducial64.spectrum).sample(
      seed=(7, 0))
  noise = np.full([N, N], noise_level)
  shear = likelihood.ShearLikelihood(truth, noise, np.ones([N, N])).sample(
      seed=(7, 1)).numpy()
  data = shear_map_lib.ShearMap(
      shear=shear.astype(np.float32), noise_std=noise.astype(np.float32),
      mask=np.ones([N, N], np.float32), pixel_scale_arcmin=PIXEL_ARCMIN)
  fiducial = gaussian.GaussianPrior.from_power_spectrum(ell, cl, N,
                                                        PIXEL_ARCMIN)
  joint = conditional.AmplitudeGaussianPrior(fiducial, BOUNDS)
  return dict(data=data, shear=shear, joint=joint, noise=noise_level,
              spectrum=fiducial64.spectrum.numpy())


@pytest.fixture(scope='module')
def problem():
  return _make_problem(NOISE)


@pytest.fixture(scope='module')
def noisy_problem():
  """Noise twice the pixel signal std: every mode noise-dominated."""
  return _make_problem(0.03)


def _exact_log_likelihood(problem, grid):
  """log p(γ | A) on ``grid`` up to a constant, dense and float64."""
  shear_operator = testing.dense_matrix(lensing.shear_from_convergence, N)
  spectrum = problem['spectrum']
  covariance = testing.dense_matrix(
      lambda x: gaussian.fourier_filter(x, spectrum), N)
  signal = shear_operator @ covariance @ shear_operator.T
  eigenvalues, vectors = np.linalg.eigh(0.5 * (signal + signal.T))
  power = (vectors.T @ problem['shear'].reshape(-1))**2
  variance = (np.asarray(grid)[:, np.newaxis] * np.maximum(eigenvalues, 0.) +
              problem['noise']**2)
  return -0.5 * np.sum(power / variance + np.log(variance), axis=1)


def _exact_amplitude_posterior(problem):
  """Mean and std of p(A | γ) under the uniform prior, dense and float64."""
  grid = np.linspace(*BOUNDS, 4001)
  log_like = _exact_log_likelihood(problem, grid)
  weights = np.exp(log_like - log_like.max())
  weights /= weights.sum()
  mean = np.sum(weights * grid)
  return mean, np.sqrt(np.sum(weights * (grid - mean)**2))


def _whitened_residuals(problem, kappa, amplitude):
  """(κ − E[κ | γ, A]) / sd[κ | γ, A] per Fourier mode, back in pixels."""
  spectrum = problem['spectrum']
  kappa_e, _ = lensing.kaiser_squires(tf.constant(problem['shear']))
  data_modes = np.fft.fft2(kappa_e.numpy())
  whitened = []
  for k, a in zip(kappa.astype(np.float64), amplitude.astype(np.float64)):
    signal = a * spectrum
    noise_var = problem['noise']**2
    variance = signal * noise_var / (signal + noise_var)
    mean = signal / (signal + noise_var) * data_modes
    scale = np.where(variance > 0, 1. / np.sqrt(np.where(variance > 0,
                                                         variance, 1.)), 0.)
    whitened.append(np.real(np.fft.ifft2((np.fft.fft2(k) - mean) * scale)))
  # The mean mode (no variance) is left out: N² − 1 unit modes.
  return np.array(whitened) * np.sqrt(N**2 / (N**2 - 1.))


def _assert_matches(amplitude, exact_mean, exact_std, std_tolerance):
  """Mean within 3.5 Monte Carlo errors, std within ``std_tolerance``."""
  assert abs(amplitude.mean() - exact_mean) < 3.5 * exact_std / np.sqrt(
      amplitude.size)
  assert abs(amplitude.std() / exact_std - 1.) < std_tolerance


def _assert_exact_kappa(problem, result, amplitude):
  """κ given each sample's own A: the exact Wiener mean and covariance."""
  z = _whitened_residuals(problem, result.samples.numpy(), amplitude)
  assert abs(z.mean()) < 0.02
  assert 0.95 < np.mean(z**2) < 1.08


def test_joint_posterior_matches_the_exact_amplitude_posterior(problem):
  num_samples = 128
  result = joint_posterior.sample_joint_posterior(
      problem['data'], problem['joint'], num_samples=num_samples,
      seed=(1, 2), progress=False, theta_update='annealed', **SETTINGS)
  amplitude = result.parameters['amplitude'].numpy()
  assert amplitude.shape == (num_samples,)
  exact_mean, exact_std = _exact_amplitude_posterior(problem)
  # The data constrain A to ±0.1 of a range 0.2-5.
  assert 0.85 < exact_mean < 1. and 0.08 < exact_std < 0.12
  _assert_matches(amplitude, exact_mean, exact_std, 0.2)
  _assert_exact_kappa(problem, result, amplitude)
  d = result.diagnostics
  assert d['num_diverged_chains'] == 0
  # 1 bootstrap + (40 + 150) transitions x 5 leapfrog + 1 Tweedie step.
  assert d['score_evaluations_per_sample'] == 1 + 190 * 5 + 1
  assert d['num_steps'] == 190 and d['num_final_steps'] == 150
  assert d['theta_names'] == ['amplitude'] and d['theta_bounds'] == [
      list(BOUNDS)]
  summary = joint_posterior.parameter_summary(result)['amplitude']
  assert summary['mean'] == pytest.approx(amplitude.mean(), rel=1e-6)
  assert summary['interval_68'][0] < exact_mean < summary['interval_68'][1]
  np.testing.assert_allclose(
      summary['interval_95'],
      np.percentile(amplitude, [2.5, 97.5], method='weibull'), rtol=1e-5)


def test_too_short_annealing_is_detected(problem):
  """The known-answer check can fail: the default annealing without final
  steps leaves A about 1.2 posterior std low on this map."""
  result = joint_posterior.sample_joint_posterior(
      problem['data'], problem['joint'], num_samples=64, seed=(1, 2),
      theta_update='annealed', num_final_steps=0, progress=False)
  exact_mean, exact_std = _exact_amplitude_posterior(problem)
  amplitude = result.parameters['amplitude'].numpy()
  assert amplitude.mean() < exact_mean - 5 * exact_std / np.sqrt(64)


@pytest.mark.parametrize('theta_method', theta_posterior.THETA_METHODS)
def test_marginal_route_matches_the_exact_posterior(problem, theta_method):
  """θ from its field-level marginal (by quadrature or HMC), then κ given
  each chain's θ: the amplitude's mean and std are the dense exact ones,
  and the κ samples the exact Wiener posterior at their own A."""
  num_samples = 128
  schedule = SETTINGS['schedule']
  result = joint_posterior.sample_joint_posterior(
      problem['data'], problem['joint'], num_samples=num_samples,
      seed=(1, 2), progress=False, schedule=schedule, num_leapfrog_steps=5,
      step_size_factor=1., theta_method=theta_method)
  amplitude = result.parameters['amplitude'].numpy()
  _assert_matches(amplitude, *_exact_amplitude_posterior(problem), 0.15)
  _assert_exact_kappa(problem, result, amplitude)
  d = result.diagnostics
  assert d['theta_update'] == 'marginal'
  # No final steps: 1 bootstrap + 40 × 5 leapfrog + 1 Tweedie step.
  assert d['num_final_steps'] == 0
  assert d['score_evaluations_per_sample'] == 1 + 40 * 5 + 1
  stage = d['theta_posterior']
  if theta_method == 'hmc':
    assert max(stage['rhat']) < 1.1 and 0.5 < stage['acceptance_rate'] < 0.95
  else:
    assert stage['method'] == 'grid' and stage['log_likelihood_evaluations'] == (
        2 * theta_posterior.DEFAULT_GRID_POINTS[1])
    # The fine grid resolves the posterior: cells a fraction of its std.
    assert stage['cell_width'][0] < 0.3 * stage['std'][0]


def test_field_log_likelihood_is_the_exact_marginal_likelihood(problem):
  """log p(A) + log p_σn(κ_E | A) differs from the dense log p(γ | A) by a
  constant, in float64: the identity of tfp_massmap.theta_posterior.
  (A θ-dependent error, e.g. σ_n² left out, would show as nats.)"""
  data = shear_map_lib.as_shear_map(problem['data'], dtype=tf.float64)
  data = data._replace(shear=tf.constant(problem['shear']),
                       noise_std=tf.fill([N, N], tf.constant(NOISE, tf.float64)))
  joint = conditional.AmplitudeGaussianPrior(
      gaussian.GaussianPrior(problem['spectrum'],
                             pixel_scale_arcmin=PIXEL_ARCMIN), BOUNDS)
  grid = np.linspace(0.3, 3., 7)
  mine = theta_posterior.theta_log_posterior_fn(data, joint)(
      grid[:, np.newaxis]).numpy()
  exact = _exact_log_likelihood(problem, grid)
  # To 1e-5 nats (differences of up to 64 nats; measured 2e-6).
  np.testing.assert_allclose(mine - mine[0], exact - exact[0], rtol=0.,
                             atol=1e-5)
  # It is the prior's log density at σ = σ_n without log p(θ).
  kappa_e, _ = lensing.kaiser_squires(data.shear)
  np.testing.assert_allclose(
      joint.field_log_likelihood(kappa_e, [[1.3]], NOISE),
      joint.log_prob(kappa_e, [[1.3]], NOISE) - joint.log_prob_theta([[1.3]]),
      rtol=1e-12)


@pytest.mark.parametrize('method', theta_posterior.THETA_METHODS)
def test_marginal_theta_where_noise_dominates_every_mode(noisy_problem,
                                                          method):
  """The regime where θ inside the annealed HMC drifts (module docstring):
  the field-level marginal still gives the exact mean and std."""
  num_samples = 512
  amplitude, diagnostics = theta_posterior.sample_theta_posterior(
      noisy_problem['data'], noisy_problem['joint'],
      num_samples=num_samples, seed=(5, 6), method=method)
  amplitude = amplitude.numpy()[:, 0]
  exact_mean, exact_std = _exact_amplitude_posterior(noisy_problem)
  assert exact_std > 0.3  # The data barely constrain A.
  # HMC, 2048 chains: 0.968 ± 0.407 against the exact 0.968 ± 0.408.
  _assert_matches(amplitude, exact_mean, exact_std, 0.13)
  if method == 'hmc':
    assert max(diagnostics['rhat']) < 1.15


def test_grid_quadrature_is_the_exact_posterior_to_its_cell_width(problem):
  """With many samples the grid's mean is the dense exact one, and its std
  is the exact one widened by the cells' w²/12 (a constant density per
  cell): 1 % for cells 0.5 std wide; a coarse grid warns."""
  amplitude, diagnostics = theta_posterior.sample_theta_posterior(
      problem['data'], problem['joint'], num_samples=20000, seed=(5, 7),
      method='grid', num_points=32)
  amplitude = amplitude.numpy()[:, 0].astype(np.float64)
  exact_mean, exact_std = _exact_amplitude_posterior(problem)
  width = diagnostics['cell_width'][0]
  assert 0.3 < width / exact_std < 0.7
  widened = np.sqrt(exact_std**2 + width**2 / 12.)
  assert abs(amplitude.mean() - exact_mean) < 3.5 * exact_std / np.sqrt(20000)
  assert abs(amplitude.std() / widened - 1.) < 0.015
  assert diagnostics['std'][0] == pytest.approx(widened, rel=0.01)
  # The fine box: 32 cells over the region within 20 nats, not the prior.
  assert width < (BOUNDS[1] - BOUNDS[0]) / 32 / 2
  with pytest.warns(UserWarning, match=r'the theta grid is coarse: its cells '
                    r'are .* posterior standard deviations wide'):
    theta_posterior.sample_theta_posterior(
        problem['data'], problem['joint'], num_samples=4, seed=(5, 7),
        method='grid', num_points=4)


def test_grid_refusals(problem):
  with pytest.raises(ValueError, match=r"'grid' serves D <= 2 parameters; "
                     r'this prior has D = 3'):
    theta_posterior.checked_theta_method('grid', types.SimpleNamespace(
        theta_bounds=[[0, 1]] * 3))
  assert theta_posterior.checked_theta_method(None, types.SimpleNamespace(
      theta_bounds=[[0, 1]] * 3)) == 'hmc'
  with pytest.raises(ValueError, match=r"one of \('grid', 'hmc'\), got 'nuts'"):
    theta_posterior.sample_theta_posterior(problem['data'], problem['joint'],
                                           num_samples=2, method='nuts')
  with pytest.raises(ValueError, match=r'num_points must be an integer >= 4, got 3'):
    theta_posterior.sample_theta_posterior(problem['data'], problem['joint'],
                                           num_samples=2, num_points=3)


@pytest.mark.parametrize('change,match', [
    (lambda d: d._replace(mask=np.pad(np.ones([N, N - 1], np.float32),
                                      [(0, 0), (0, 1)])),
     r'needs data on every pixel, but 6.2% of the mask'),
    (lambda d: d._replace(noise_std=np.linspace(
        0.005, 0.006, N * N, dtype=np.float32).reshape(N, N)),
     r'one noise level .* from 0.005 to 0.006'),
])
def test_theta_posterior_alone_refuses_masked_or_coloured_data(
    problem, change, match):
  with pytest.raises(ValueError, match=match):
    theta_posterior.sample_theta_posterior(change(problem['data']),
                                           problem['joint'], num_samples=2)


def _masked_problem():
  """The 16² map with a third masked and noise 1-1.5 × 0.005 per pixel, and
  log p(γ | A) on a grid by a dense float64 eigendecomposition."""
  ell, cl = cosmology.cosmos_convergence_cl()
  spectrum = gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, N, PIXEL_ARCMIN, dtype=tf.float64).spectrum.numpy()
  rows, columns = np.mgrid[:N, :N]
  mask = np.ones([N, N])
  mask[:, :4] = 0.
  mask[(rows - 10)**2 + (columns - 10)**2 < 6] = 0.
  noise = NOISE * (1. + 0.5 * np.random.default_rng(0).uniform(size=[N, N]))
  truth = gaussian.GaussianPrior(A_TRUE * spectrum).sample(seed=(7, 0))
  shear = likelihood.ShearLikelihood(truth, noise, mask).sample(
      seed=(7, 1)).numpy() * mask[..., np.newaxis]
  data = shear_map_lib.ShearMap(
      shear=shear.astype(np.float32), noise_std=noise.astype(np.float32),
      mask=mask.astype(np.float32), pixel_scale_arcmin=PIXEL_ARCMIN)
  shear_operator = testing.dense_matrix(lensing.shear_from_convergence, N)
  covariance = testing.dense_matrix(
      lambda x: gaussian.fourier_filter(x, spectrum), N)
  observed = np.repeat(mask.reshape(-1), 2) > 0
  std = np.repeat(noise.reshape(-1), 2)[observed]
  signal = (shear_operator @ covariance @ shear_operator.T)[
      np.ix_(observed, observed)] / np.outer(std, std)
  eigenvalues, vectors = np.linalg.eigh(0.5 * (signal + signal.T))
  power = (vectors.T @ (shear.reshape(-1)[observed] / std))**2
  grid = np.linspace(*BOUNDS, 4001)
  variance = grid[:, np.newaxis] * np.maximum(eigenvalues, 0.) + 1.
  log_like = -0.5 * np.sum(power / variance + np.log(variance), axis=1)
  weights = np.exp(log_like - log_like.max())
  weights /= weights.sum()
  mean = np.sum(weights * grid)
  return data, mean, np.sqrt(np.sum(weights * (grid - mean)**2))


@pytest.mark.parametrize('theta_method', theta_posterior.THETA_METHODS)
def test_marginal_route_on_masked_data_with_coloured_noise(problem,
                                                           theta_method):
  """The partially collapsed Gibbs sampler (data imputed to white noise on
  the full grid) against the dense exact p(A | γ) of masked data."""
  data, exact_mean, exact_std = _masked_problem()
  num_samples = 128
  result = joint_posterior.sample_joint_posterior(
      data, problem['joint'], num_samples=num_samples, seed=(1, 2),
      progress=False, schedule=SETTINGS['schedule'],
      sweep_schedule=SETTINGS['schedule'], num_leapfrog_steps=5,
      step_size_factor=1., num_sweeps=4, theta_method=theta_method)
  amplitude = result.parameters['amplitude'].numpy()
  assert 0.9 < exact_mean < 1. and 0.1 < exact_std < 0.15
  _assert_matches(amplitude, exact_mean, exact_std, 0.15)
  stage = result.diagnostics['theta_posterior']
  assert stage['num_sweeps'] == 4 and len(stage['sweep_theta_means']) == 4
  assert stage['noise_level'] == pytest.approx(NOISE, rel=1e-2)
  if theta_method == 'hmc':
    assert stage['rhat'] is None  # Chains of different imputed data.
  # 5 κ runs of 1 + 40 × 5 + 1 evaluations; the last one is reported.
  assert result.diagnostics['score_evaluations_per_sample'] == 202


def test_gibbs_sweeps_warn_when_theta_still_moves():
  """3 Monte Carlo errors of movement in the last sweep warn; less does not."""
  theta = np.random.default_rng(0).normal(1., 0.1, size=[100, 1])
  with pytest.warns(RuntimeWarning, match=r'mean amplitude still moved from '
                    r'0.95 to 1 \(.* Monte Carlo errors\) in the last of 4'):
    joint_posterior._warn_if_drifting([[0.9], [0.95], [1.0]], theta,  # pylint: disable=protected-access
                                      ('amplitude',), 4)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    joint_posterior._warn_if_drifting([[0.99], [1.0]], theta,  # pylint: disable=protected-access
                                      ('amplitude',), 2)


def test_imputed_white_data_reproduce_the_likelihood(problem):
  """y ~ p(y | κ, γ) per pixel: where σ_pix = σ_w y is γ itself; masked,
  y − Aκ has std σ_w; observed, y − mean has the stated variance."""
  data, _, _ = _masked_problem()
  kappa = tf.zeros([400, N, N])
  level, white = theta_posterior.augmentation_noise_level(data)
  assert not white and level == pytest.approx(float(np.min(data.noise_std)))
  y = theta_posterior.impute_white_shear(data, kappa, level,
                                         seed=(1, 1)).numpy()
  mask = np.asarray(data.mask) > 0
  noise = np.asarray(data.noise_std, np.float64)[..., np.newaxis]
  shear = np.asarray(data.shear, np.float64)
  np.testing.assert_allclose(y.std(axis=0)[~mask], level, rtol=0.15)
  extra = noise**2 - level**2
  want_mean = level**2 * shear / noise**2  # Aκ = 0.
  want_std = np.sqrt(level**2 * extra / noise**2)
  z = (y - want_mean) / np.where(want_std > 0, want_std, 1.)
  assert abs(z[:, mask].mean()) < 0.02
  assert np.mean(z[:, mask]**2) == pytest.approx(1., abs=0.03)
  exact = (want_std[..., 0] == 0) & mask
  assert exact.sum() == 1  # The least noisy pixel: y = γ there.
  np.testing.assert_allclose(y[:, exact], np.broadcast_to(
      shear[exact], y[:, exact].shape), rtol=1e-5)
  assert theta_posterior.augmentation_noise_level(problem['data']) == (
      pytest.approx(NOISE), True)


def test_marginal_route_refusals(problem):
  sampler = joint_posterior.JointPosteriorSampler(
      problem['joint'], schedule=GeometricSchedule(0.05, 1e-3, 2))
  with pytest.raises(ValueError, match="initial_theta is for theta_update="):
    sampler.sample(problem['data'], num_samples=2, initial_theta=[1.])
  nuisance = _WithNuisance(problem['joint'], field_level=False)
  with pytest.raises(ValueError, match='has no field_log_likelihood'):
    joint_posterior.sample_joint_posterior(
        problem['data'], nuisance, num_samples=2, progress=False)


def test_joint_score_is_the_conditional_posterior_score_and_its_theta_part(
    problem):
  """The κ part is `annealed_posterior_score_fn` with ``given(θ)``; the u
  part the derivative of log p_σ(κ, θ(u)) + log|dθ/du| (finite
  differences in float64)."""
  data = shear_map_lib.as_shear_map(problem['data'], dtype=tf.float64)
  joint = conditional.AmplitudeGaussianPrior(
      gaussian.GaussianPrior(problem['spectrum'],
                             pixel_scale_arcmin=PIXEL_ARCMIN), BOUNDS)
  score_fn = joint_posterior.joint_posterior_score_fn(
      data.shear, data.noise_std, data.mask, joint, joint.theta_bounds)
  bijector = joint_posterior.theta_bijector(joint.theta_bounds, tf.float64)
  kappa = joint.fiducial.sample(2, seed=(3, 3))
  u = np.array([[-0.4], [0.9]])
  sigma = tf.constant(0.01, tf.float64)
  score_kappa, score_u = score_fn([kappa, tf.constant(u)], sigma)
  theta = bijector.forward(u).numpy()
  for i in range(2):
    conditional_score = posterior.annealed_posterior_score_fn(
        data.shear, data.noise_std, data.mask, joint.given(theta[i]))
    want = conditional_score(kappa[i:i + 1], sigma)[0]
    np.testing.assert_allclose(score_kappa[i], want, rtol=1e-9,
                               atol=1e-9 * np.abs(want).max())

  def log_density(u):  # log p_σ(κ, θ(u)) + log dθ/du.
    width = BOUNDS[1] - BOUNDS[0]
    theta = BOUNDS[0] + width * scipy.stats.norm.cdf(u)
    return joint.log_prob(kappa, theta, sigma).numpy() + np.log(
        width * scipy.stats.norm.pdf(u[:, 0]))

  step = 1e-5
  finite_difference = (log_density(u + step) - log_density(u - step)) / (
      2. * step)
  np.testing.assert_allclose(score_u[:, 0], finite_difference, rtol=1e-6)
  # Under a uniform θ prior u is N(0, 1): θ = low + (high − low) Φ(u).
  np.testing.assert_allclose(bijector.forward([[0.]]), [[np.mean(BOUNDS)]],
                             rtol=1e-12)


def test_conditional_posterior_is_sample_posterior_with_given(problem):
  sampler = joint_posterior.JointPosteriorSampler(
      problem['joint'], schedule=GeometricSchedule(0.05, 1e-3, 12),
      num_leapfrog_steps=5, step_size_factor=1.)
  kwargs = dict(num_samples=128, seed=(4, 5))
  result = sampler.sample_conditional(problem['data'], [A_TRUE], **kwargs)
  given = problem['joint'].given([A_TRUE])
  same = posterior.sample_posterior(
      problem['data'], given, schedule=GeometricSchedule(0.05, 1e-3, 12),
      num_leapfrog_steps=5, step_size_factor=1., progress=False, **kwargs)
  np.testing.assert_array_equal(result.samples.numpy(), same.samples.numpy())
  assert result.parameters is None
  # And it is the exact posterior at that A (dense solve).
  mean, covariance = testing.exact_gaussian_posterior(problem['data'],
                                                      given)
  std = np.sqrt(np.diag(covariance)).reshape(N, N)
  error = np.sqrt(np.mean((result.mean.numpy() - mean)**2) / np.mean(std**2))
  assert error < 0.15  # Monte Carlo floor 1/√128 = 0.09.
  assert 0.9 < np.sqrt(np.mean(result.std.numpy()**2) / np.mean(std**2)) < 1.1
  with pytest.raises(ValueError, match='amplitude = 9.0 is outside'):
    sampler.sample_conditional(problem['data'], [9.], **kwargs)


def test_sampler_compiles_once_and_seeds_repeat(problem):
  sampler = joint_posterior.JointPosteriorSampler(
      problem['joint'], theta_update='annealed',
      schedule=GeometricSchedule(0.05, 1e-3, 4), num_final_steps=4)
  first = sampler.sample(problem['data'], num_samples=4, seed=(1, 1))
  traced = sampler.tracing_count()
  again = sampler.sample(problem['data'], num_samples=4, seed=(1, 1))
  flipped = sampler.sample(
      problem['data']._replace(shear=-problem['data'].shear), num_samples=4,
      seed=(1, 1))
  assert sampler.tracing_count() == traced
  np.testing.assert_array_equal(first.samples.numpy(), again.samples.numpy())
  np.testing.assert_array_equal(first.parameters['amplitude'].numpy(),
                                again.parameters['amplitude'].numpy())
  assert not np.allclose(first.samples.numpy(), flipped.samples.numpy())
  # A fixed starting θ: every chain starts there.
  fixed = sampler.sample(problem['data'], num_samples=4, seed=(1, 1),
                         initial_theta=[1.5], batch_size=2)
  assert fixed.diagnostics['batch_size'] == 2
  assert np.all(np.isfinite(fixed.parameters['amplitude'].numpy()))


def test_diverged_chains_are_counted_and_dropped_with_their_theta(problem):
  """A u step twice the width of u given κ (about 0.1) blows chains up."""
  with pytest.warns(RuntimeWarning, match=r'chains diverged .*theta_step'):
    result = joint_posterior.sample_joint_posterior(
        problem['data'], problem['joint'], num_samples=16, seed=(2, 2),
        schedule=GeometricSchedule(0.05, 1e-3, 8), theta_step_size=0.2,
        theta_update='annealed', num_final_steps=10, progress=False)
  diverged = result.diagnostics['diverged_chains']
  assert 2 <= len(diverged) < 16
  kept = result.drop_diverged()
  keep = sorted(set(range(16)) - set(diverged))
  np.testing.assert_array_equal(
      kept.parameters['amplitude'].numpy(),
      tf.gather(result.parameters['amplitude'], keep).numpy())
  assert kept.samples.shape[0] == len(keep)


def test_parameters_field_of_posterior_samples():
  samples = tf.zeros([3, 4, 4])
  with pytest.raises(ValueError, match=r"parameters\['a'\] must hold one "
                     r'sample per sample of samples \(3\)'):
    results.from_samples(samples, {}, parameters={'a': tf.zeros([2])})
  result = results.from_samples(samples, {})
  assert result.parameters is None
  with pytest.raises(ValueError, match='holds no parameter samples'):
    joint_posterior.parameter_summary(result)


@pytest.mark.parametrize('kwargs,match', [
    (dict(initial_theta=[6.]), 'amplitude = 6.0 is outside'),
    (dict(initial_theta=[0.2]), 'strictly inside'),
    (dict(initial_theta=[[1.], [1.]]), r'initial_theta must have shape \[D\]'),
    (dict(divergence_bound=0.5), 'divergence_bound=0.5 must exceed'),
    (dict(num_samples=0), 'num_samples must be an integer >= 1'),
])
def test_sample_refuses_bad_arguments(problem, kwargs, match):
  sampler = joint_posterior.JointPosteriorSampler(
      problem['joint'], theta_update='annealed',
      schedule=GeometricSchedule(0.05, 1e-3, 2))
  kwargs = dict(dict(num_samples=4), **kwargs)
  with pytest.raises(ValueError, match=match):
    sampler.sample(problem['data'], **kwargs)


def test_divergence_bound_must_clear_the_starting_theta(problem):
  sampler = joint_posterior.JointPosteriorSampler(
      problem['joint'], theta_update='annealed',
      schedule=GeometricSchedule(0.01, 1e-3, 2))
  # |κ| starts within 6 σ_max = 0.06, but u ~ N(0, 1) reaches 2 or more.
  with pytest.raises(ValueError, match=r'largest starting \|u\| \+ 3'):
    sampler.sample(problem['data'], num_samples=64, divergence_bound=3.,
                   seed=(1, 1))


@pytest.mark.parametrize('kwargs,match', [
    (dict(theta_step_size=0.), 'theta_step_size must be a positive'),
    (dict(theta_step_size_factor=-1.), 'theta_step_size_factor must be a'),
    (dict(num_final_steps=-1), 'num_final_steps must be an integer >= 0'),
    (dict(step_size_factor=1.5), r'step_size_factor must be in \(0, √2'),
    (dict(method='nuts'), 'method must be one of'),
    (dict(theta_update='gibbs'), 'theta_update must be one of'),
])
def test_sampler_refuses_bad_settings(problem, kwargs, match):
  with pytest.raises(ValueError, match=match):
    joint_posterior.JointPosteriorSampler(problem['joint'], **kwargs)


def test_sampler_refuses_a_map_prior_and_mismatched_data(problem):
  with pytest.raises(ValueError, match='must have a log_prob_theta method'):
    joint_posterior.JointPosteriorSampler(problem['joint'].fiducial)
  sampler = joint_posterior.JointPosteriorSampler(
      problem['joint'], schedule=GeometricSchedule(0.05, 1e-3, 2))
  data = problem['data']
  with pytest.raises(ValueError, match='defined on 16x16 maps but the shear '
                     'map is 8x8'):
    sampler.sample(data._replace(shear=data.shear[:8, :8],
                                 noise_std=data.noise_std[:8, :8],
                                 mask=data.mask[:8, :8]), num_samples=2)
  with pytest.raises(ValueError, match='computes in float32'):
    sampler.sample(data._replace(shear=data.shear.astype(np.float64),
                                 noise_std=data.noise_std.astype(np.float64)),
                   num_samples=2)


class _WithNuisance:
  """The amplitude prior and a second parameter b, uniform on (0, 1) and
  independent of κ: its posterior is its prior."""

  def __init__(self, joint, field_level=True):
    self._joint = joint
    if field_level:
      self.field_log_likelihood = lambda x, theta, sigma: (
          joint.field_log_likelihood(x, theta[..., :1], sigma))
    self.theta_names = joint.theta_names + ('b',)
    self.theta_bounds = np.concatenate([joint.theta_bounds, [[0., 1.]]])
    self.dtype = joint.dtype
    self.pixel_scale_arcmin = joint.pixel_scale_arcmin
    self.num_pixels_per_side = joint.num_pixels_per_side

  def score(self, x, theta, sigma):
    score_x, score_a = self._joint.score(x, theta[..., :1], sigma)
    return score_x, tf.concat([score_a, tf.zeros_like(score_a)], axis=-1)

  def log_prob_theta(self, theta):
    return self._joint.log_prob_theta(theta[..., :1])

  def given(self, theta):
    return self._joint.given(theta[:1])


@pytest.mark.parametrize('theta_update', joint_posterior.THETA_UPDATES)
def test_two_parameters_and_the_jacobian(problem, theta_update):
  """θ = (A, b): b's samples are uniform on (0, 1) (through u ~ N(0, 1) and
  the log-det Jacobian), and A is as with A alone; no denoise method, so
  the Tweedie step comes from the κ score."""
  num_samples = 256
  result = joint_posterior.sample_joint_posterior(
      problem['data'], _WithNuisance(problem['joint']),
      num_samples=num_samples, seed=(3, 4), progress=False,
      schedule=GeometricSchedule(0.05, 1e-3, num_levels=20),
      theta_update=theta_update,
      num_final_steps=40 if theta_update == 'annealed' else 0)
  assert sorted(result.parameters) == ['amplitude', 'b']
  b = result.parameters['b'].numpy()
  assert abs(b.mean() - 0.5) < 3.5 * np.sqrt(1 / 12 / num_samples)
  assert 0.9 < b.std() / np.sqrt(1 / 12) < 1.1
  exact_mean, exact_std = _exact_amplitude_posterior(problem)
  amplitude = result.parameters['amplitude'].numpy()
  assert abs(amplitude.mean() - exact_mean) < exact_std
  np.testing.assert_allclose(np.mean(result.samples.numpy(), axis=(1, 2)),
                             0., atol=1e-6)


def test_grid_parameter_summary_of_a_uniform_box_is_exact():
  # Mass spread evenly over [0.2, 0.4] × [0.6, 1.0]: the marginal CDFs are
  # linear, so every number is known exactly.
  centres = [0.2 + (np.arange(20) + 0.5) * 0.01,
             0.6 + (np.arange(8) + 0.5) * 0.05]
  got = joint_posterior.grid_parameter_summary(
      centres, np.ones([20, 8]), ['omega_m', 'sigma8'], truth=[0.25, 0.9])
  for name, (low, high), truth in (('omega_m', (0.2, 0.4), 0.25),
                                   ('sigma8', (0.6, 1.0), 0.9)):
    part = got[name]
    np.testing.assert_allclose(part['mean'], (low + high) / 2, rtol=1e-12)
    np.testing.assert_allclose(part['std'], (high - low) / np.sqrt(12.),
                               rtol=1e-12)
    for level in (0.68, 0.95):
      np.testing.assert_allclose(
          part[f'interval_{round(100 * level)}'],
          [low + (high - low) * (1 - level) / 2,
           low + (high - low) * (1 + level) / 2], rtol=1e-12)
    np.testing.assert_allclose(part['cdf_at_truth'],
                               (truth - low) / (high - low), rtol=1e-12)


def test_grid_parameter_summary_of_a_gaussian_matches_the_normal_quantiles():
  mean, std = 0.8, 0.05
  # ±6 std, so that what the box cuts off (2e-9) changes no quantile.
  centres = [0.5 + (np.arange(600) + 0.5) * 0.001]
  weights = scipy.stats.norm.pdf(centres[0], mean, std)
  got = joint_posterior.grid_parameter_summary(centres, weights, ['sigma8'],
                                               truth=[0.83])['sigma8']
  np.testing.assert_allclose(got['mean'], mean, rtol=1e-9)
  np.testing.assert_allclose(got['std'], std, rtol=1e-3)
  for level in (0.68, 0.95):
    z = scipy.stats.norm.ppf((1 + level) / 2)
    np.testing.assert_allclose(got[f'interval_{round(100 * level)}'],
                               [mean - z * std, mean + z * std], atol=2e-5)
  np.testing.assert_allclose(got['cdf_at_truth'],
                             scipy.stats.norm.cdf(0.83, mean, std), atol=1e-4)


def test_grid_parameter_summary_agrees_with_the_summary_of_its_draws():
  # The same posterior two ways: tabulated, and 200 000 draws of it (a cell
  # by its mass, then a uniform point inside) through parameter_summary.
  rng = np.random.default_rng(0)
  centres = [0.2 + (np.arange(30) + 0.5) * 0.2 / 30,
             0.6 + (np.arange(40) + 0.5) * 0.01]
  grid = np.stack(np.meshgrid(*centres, indexing='ij'), -1)
  # A Gaussian of correlation 0.6 (Ωm std 0.03, 4.5 cells; σ8 std 0.06).
  dx, dy = (grid[..., 0] - 0.3) / 0.03, (grid[..., 1] - 0.75) / 0.06
  weights = np.exp(-0.5 * (dx**2 + dy**2 - 1.2 * dx * dy) / 0.64)
  cells = rng.choice(weights.size, 200_000, p=(weights / weights.sum()).ravel())
  i, j = np.unravel_index(cells, weights.shape)
  draws = types.SimpleNamespace(parameters=dict(
      omega_m=centres[0][i] + (rng.random(i.size) - 0.5) * 0.2 / 30,
      sigma8=centres[1][j] + (rng.random(j.size) - 0.5) * 0.01))
  want = joint_posterior.parameter_summary(draws)
  got = joint_posterior.grid_parameter_summary(centres, weights,
                                               ['omega_m', 'sigma8'])
  for name in ('omega_m', 'sigma8'):
    np.testing.assert_allclose(got[name]['mean'], want[name]['mean'],
                               atol=3e-4)
    np.testing.assert_allclose(got[name]['std'], want[name]['std'], rtol=1e-2)
    for key in ('interval_68', 'interval_95'):
      np.testing.assert_allclose(got[name][key], want[name][key], atol=1.5e-3)
    assert 'cdf_at_truth' not in got[name]


@pytest.mark.parametrize('centres, weights, names, truth, message', [
    ([[0.1, 0.2, 0.3]], np.ones(4), ['a'], None, 'shape'),
    ([[0.1, 0.2, 0.4]], np.ones(3), ['a'], None, 'equally spaced'),
    ([[0.3, 0.2, 0.1]], np.ones(3), ['a'], None, 'increasing'),
    ([[0.1, 0.2, 0.3]], -np.ones(3), ['a'], None, '>= 0'),
    ([[0.1, 0.2, 0.3]], np.zeros(3), ['a'], None, 'all 0'),
    ([[0.1, 0.2, 0.3]], np.ones(3), ['a', 'b'], None, 'names'),
    ([[0.1, 0.2, 0.3]], np.ones(3), ['a'], [0.1, 0.2], 'truth'),
])
def test_grid_parameter_summary_refuses_bad_grids(centres, weights, names,
                                                  truth, message):
  with pytest.raises(ValueError, match=message):
    joint_posterior.grid_parameter_summary(centres, weights, names, truth)

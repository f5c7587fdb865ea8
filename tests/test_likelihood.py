"""Tests of ShearLikelihood against scipy and analytic answers."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import lensing
from tfp_massmap.likelihood import ShearLikelihood
from tfp_massmap.likelihood import data_fit
from tfp_massmap.likelihood import identity_operator
from tfp_massmap.shear_map import ShearMap

N = 16


def _problem(dtype=np.float64, seed=0, n=N, batch=()):
  """Random κ, per-component noise std, mask (~70% data) and shear."""
  rng = np.random.default_rng(seed)
  kappa = rng.normal(0., 0.05, size=batch + (n, n)).astype(dtype)
  noise = rng.uniform(0.1, 0.4, size=batch + (n, n, 2)).astype(dtype)
  mask = (rng.uniform(size=(n, n)) < 0.7).astype(dtype)
  shear = rng.normal(0., 0.3, size=batch + (n, n, 2)).astype(dtype)
  return kappa, noise, mask, shear


def _scipy_log_prob(shear, mean, variance, mask):
  """Σ over pixels with data of the normal log-density (numpy, float64)."""
  terms = scipy.stats.norm.logpdf(shear, loc=mean, scale=np.sqrt(variance))
  return np.sum(terms * mask[..., None], axis=(-3, -2, -1))


@pytest.mark.parametrize('extra_variance', [0., 0.03])
def test_log_prob_matches_scipy(extra_variance):
  kappa, noise, mask, shear = _problem(np.float32)
  dist = ShearLikelihood(kappa, noise, mask, extra_variance=extra_variance)
  mean = lensing.shear_from_convergence(kappa.astype(np.float64)).numpy()
  expected = _scipy_log_prob(shear.astype(np.float64), mean,
                             noise.astype(np.float64)**2 + extra_variance, mask)
  np.testing.assert_allclose(dist.log_prob(shear).numpy(), expected, rtol=1e-5)


def test_per_map_noise_is_shared_by_both_components():
  kappa, noise, mask, shear = _problem()
  per_map = noise[..., 0]
  dist = ShearLikelihood(kappa, per_map, mask)
  both = ShearLikelihood(kappa, np.stack([per_map, per_map], axis=-1), mask)
  mean = lensing.shear_from_convergence(kappa).numpy()
  expected = _scipy_log_prob(shear, mean, per_map[..., None]**2, mask)
  np.testing.assert_allclose(dist.log_prob(shear).numpy(), expected, rtol=1e-12)
  np.testing.assert_allclose(both.log_prob(shear).numpy(), expected, rtol=1e-12)


def test_masked_pixels_carry_no_information():
  kappa, noise, mask, shear = _problem()
  off = mask == 0
  dist = ShearLikelihood(kappa, noise, mask)
  other_shear = shear.copy()
  other_shear[off] = [1e3, np.nan]
  other_noise = noise.copy()
  other_noise[off] = [0., np.nan]   # like noise maps with no galaxies
  other = ShearLikelihood(kappa, other_noise, mask, validate_args=True)
  assert other.log_prob(other_shear).numpy() == dist.log_prob(shear).numpy()
  kappa_t = tf.constant(kappa)
  _, grad = tfp.math.value_and_gradient(
      lambda k: ShearLikelihood(k, other_noise, mask).log_prob(other_shear),
      kappa_t)
  assert np.all(np.isfinite(grad.numpy()))
  # Samples, mean and variance vanish off the mask.
  assert np.all(other.sample(3, seed=(1, 2)).numpy()[:, off] == 0.)
  assert np.all(other.mean().numpy()[off] == 0.)
  assert np.all(other.variance().numpy()[off] == 0.)


def test_batch_shapes_broadcast_like_any_distribution():
  rng = np.random.default_rng(1)
  kappa = rng.normal(0., 0.05, size=(3, 1, N, N))
  noise = rng.uniform(0.1, 0.4, size=(4, N, N))
  extra = np.array([0., 0.01, 0.02, 0.03])
  mask = (rng.uniform(size=(N, N)) < 0.7).astype(np.float64)
  shear = rng.normal(0., 0.3, size=(N, N, 2))
  dist = ShearLikelihood(kappa, noise, mask, extra_variance=extra)
  assert dist.batch_shape == [3, 4]
  assert dist.event_shape == [N, N, 2]
  np.testing.assert_array_equal(dist.batch_shape_tensor().numpy(), [3, 4])
  log_prob = dist.log_prob(shear).numpy()
  assert log_prob.shape == (3, 4)
  for i in range(3):
    for j in range(4):
      single = ShearLikelihood(kappa[i, 0], noise[j], mask,
                               extra_variance=extra[j])
      np.testing.assert_allclose(log_prob[i, j], single.log_prob(shear).numpy(),
                                 rtol=1e-12)
  # A sample dimension in front of the batch, and slicing the batch.
  samples = dist.sample(2, seed=(3, 4))
  assert dist.log_prob(samples).shape == (2, 3, 4)
  np.testing.assert_allclose(dist[1, 2:].log_prob(shear).numpy(),
                             log_prob[1, 2:], rtol=1e-12)
  with pytest.raises(ValueError, match=r'must broadcast'):
    ShearLikelihood(np.zeros((3, N, N)), np.ones((4, N, N)))


def test_sample_moments_and_seeds():
  kappa, noise, mask, _ = _problem(np.float64, batch=(2,))
  extra = 0.01
  dist = ShearLikelihood(kappa, noise, mask, extra_variance=extra)
  num = 4000
  samples = dist.sample(num, seed=(5, 6)).numpy()
  assert samples.shape == (num, 2, N, N, 2)
  on = np.broadcast_to(mask[..., None] > 0, samples.shape[1:])
  mean = lensing.shear_from_convergence(kappa).numpy()
  variance = noise**2 + extra
  np.testing.assert_allclose(dist.mean().numpy()[on], mean[on], rtol=1e-12)
  np.testing.assert_allclose(dist.variance().numpy()[on], variance[on],
                             rtol=1e-12)
  # Sample mean: standardized errors are N(0, 1) (~1400 of them).
  z = (samples.mean(axis=0) - mean)[on] / np.sqrt(variance[on] / num)
  assert abs(np.mean(z**2) - 1.) < 0.15
  assert np.max(np.abs(z)) < 5.
  # Sample variance: ratio to v has std sqrt(2/(num-1)) = 0.022 per pixel.
  ratio = samples.var(axis=0, ddof=1)[on] / variance[on]
  assert abs(np.mean(ratio) - 1.) < 0.005
  assert np.max(np.abs(ratio - 1.)) < 5 * np.sqrt(2. / (num - 1))
  assert np.all(samples[:, ~on] == 0.)
  # Stateless seeds: same seed, same sample; another seed, another sample.
  again = dist.sample(num, seed=(5, 6)).numpy()
  np.testing.assert_array_equal(samples, again)
  other = dist.sample(num, seed=(5, 7)).numpy()
  assert not np.allclose(samples[:, on], other[:, on])


def test_extra_variance_adds_to_noise_variance():
  kappa, noise, mask, shear = _problem()
  on = np.broadcast_to(mask[..., None] > 0, noise.shape)
  base = ShearLikelihood(kappa, noise, mask)
  for extra in (0.02, 0.5):
    annealed = ShearLikelihood(kappa, noise, mask, extra_variance=extra)
    np.testing.assert_allclose(
        annealed.variance().numpy()[on],
        base.variance().numpy()[on] + extra, rtol=1e-12)
    # Same as folding the extra variance into the noise std.
    folded = ShearLikelihood(kappa, np.sqrt(noise**2 + extra), mask)
    np.testing.assert_allclose(annealed.log_prob(shear).numpy(),
                               folded.log_prob(shear).numpy(), rtol=1e-12)
  # Zero noise is allowed once the extra variance makes v > 0.
  zero = ShearLikelihood(kappa, np.zeros_like(noise), mask,
                         extra_variance=0.1, validate_args=True)
  mean = lensing.shear_from_convergence(kappa).numpy()
  np.testing.assert_allclose(
      zero.log_prob(shear).numpy(),
      _scipy_log_prob(shear, mean, np.full_like(noise, 0.1), mask), rtol=1e-12)


@pytest.mark.parametrize('bad_value, message', [
    (-0.2, 'negative'),
    (np.nan, 'NaN'),
    (0., r'noise_std is 0'),
])
def test_validate_args_rejects_bad_noise(bad_value, message):
  kappa, noise, mask, _ = _problem()
  on = np.argwhere(mask > 0)[0]
  off = np.argwhere(mask == 0)[0]
  bad = noise.copy()
  bad[tuple(on)] = bad_value
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    ShearLikelihood(kappa, bad, mask, validate_args=True)
  # The same value where there is no data is harmless.
  harmless = noise.copy()
  harmless[tuple(off)] = bad_value
  ShearLikelihood(kappa, harmless, mask, validate_args=True)
  # A variable is checked when the distribution is used.
  variable = tf.Variable(noise)
  dist = ShearLikelihood(kappa, variable, mask, validate_args=True)
  dist.log_prob(np.zeros((N, N, 2)))
  variable.assign(bad)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    dist.log_prob(np.zeros((N, N, 2)))


def test_validate_args_rejects_negative_extra_variance():
  kappa, noise, mask, _ = _problem()
  with pytest.raises(tf.errors.InvalidArgumentError, match='extra_variance'):
    ShearLikelihood(kappa, noise, mask, extra_variance=-0.1,
                    validate_args=True)


def test_mismatched_shapes_raise():
  kappa = np.zeros((N, N))
  with pytest.raises(ValueError, match=r'\(17, 17\).*\[16, 16\]'):
    ShearLikelihood(kappa, np.ones((N + 1, N + 1)))
  with pytest.raises(ValueError, match=r'2 channels.*\(16, 16, 3\)'):
    ShearLikelihood(kappa, np.ones((N, N, 3)))
  with pytest.raises(ValueError, match=r'\(16, 16\).*\(17, 17\)'):
    ShearLikelihood(kappa, np.ones((N, N)), mask=np.ones((N + 1, N + 1)))
  with pytest.raises(ValueError, match=r'square'):
    ShearLikelihood(np.zeros((N, N + 1)), np.ones((N, N + 1)))
  dist = ShearLikelihood(kappa, np.ones((N, N)))
  with pytest.raises(ValueError, match=r'shear.*\(8, 8\).*\(16, 16\)'):
    dist.log_prob(np.zeros((8, 8, 2)))
  with pytest.raises(ValueError, match=r'operator'):
    ShearLikelihood(kappa, np.ones((N, N)), operator='shear')


def _analytic_gradient(kappa, noise, mask, shear, extra=0.):
  """Aᵀ[m (γ − Aκ) / v], with Aᵀ the E-mode of Kaiser-Squires."""
  residual = shear - lensing.shear_from_convergence(kappa).numpy()
  weighted = mask[..., None] * residual / (noise**2 + extra)
  return lensing.kaiser_squires(weighted)[0].numpy()


def test_gradient_is_adjoint_of_weighted_residual():
  kappa, noise, mask, shear = _problem(batch=(2,))
  kappa_t = tf.constant(kappa)
  with tf.GradientTape() as tape:
    tape.watch(kappa_t)
    log_prob = ShearLikelihood(kappa_t, noise, mask,
                               extra_variance=0.01).log_prob(shear)
  grad = tape.gradient(log_prob, kappa_t).numpy()
  expected = _analytic_gradient(kappa, noise, mask, shear, extra=0.01)
  np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-9)
  value, grad2 = tfp.math.value_and_gradient(
      lambda k: ShearLikelihood(k, noise, mask, 0.01).log_prob(shear), kappa_t)
  np.testing.assert_allclose(value.numpy(), log_prob.numpy(), rtol=1e-12)
  np.testing.assert_allclose(grad2.numpy(), expected, rtol=1e-9, atol=1e-9)


def test_works_under_xla():
  kappa, noise, mask, shear = _problem(np.float32, batch=(2,))

  @tf.function(jit_compile=True)
  def value_grad_and_sample(k):
    value, grad = tfp.math.value_and_gradient(
        lambda k: ShearLikelihood(k, noise, mask).log_prob(shear), k)
    sample = ShearLikelihood(k, noise, mask).sample(seed=(7, 8))
    return value, grad, sample

  value, grad, sample = value_grad_and_sample(tf.constant(kappa))
  eager = ShearLikelihood(kappa, noise, mask)
  np.testing.assert_allclose(value.numpy(), eager.log_prob(shear).numpy(),
                             rtol=1e-5)
  np.testing.assert_allclose(grad.numpy(),
                             _analytic_gradient(kappa, noise, mask, shear),
                             rtol=1e-3, atol=1e-3)
  # Stateless draws may differ between XLA and eager kernels, but the same
  # seed must give the same draw, with the right distribution.
  assert sample.shape == (2, N, N, 2)
  _, _, again = value_grad_and_sample(tf.constant(kappa))
  np.testing.assert_array_equal(sample.numpy(), again.numpy())
  on = np.broadcast_to(mask[..., None] > 0, sample.shape)
  z = (sample.numpy() - eager.mean().numpy())[on] / noise[on]
  assert abs(np.mean(z**2) - 1.) < 0.2   # ~1400 values: std 0.04
  assert np.all(sample.numpy()[~on] == 0.)


def test_float64_keeps_precision():
  kappa, noise, mask, shear = _problem(np.float64, n=32)
  dist = ShearLikelihood(kappa, noise, mask)
  assert dist.dtype == tf.float64
  log_prob = dist.log_prob(shear)
  assert log_prob.dtype == tf.float64
  assert dist.sample(seed=(1, 1)).dtype == tf.float64
  mean = lensing.shear_from_convergence(kappa).numpy()
  np.testing.assert_allclose(log_prob.numpy(),
                             _scipy_log_prob(shear, mean, noise**2, mask),
                             rtol=1e-13)


def test_identity_operator_is_a_plain_gaussian():
  rng = np.random.default_rng(2)
  kappa = rng.normal(size=(N, N))
  noise = rng.uniform(0.5, 1.5, size=(N, N))
  mask = (rng.uniform(size=(N, N)) < 0.7).astype(np.float64)
  data = rng.normal(size=(N, N, 1))
  dist = ShearLikelihood(kappa, noise, mask, operator=identity_operator)
  assert dist.event_shape == [N, N, 1]
  expected = np.sum(mask * scipy.stats.norm.logpdf(data[..., 0], kappa, noise))
  np.testing.assert_allclose(dist.log_prob(data).numpy(), expected, rtol=1e-12)
  # Same answer as an independent Normal over the pixels with data.
  normal = tfp.distributions.Normal(kappa, noise)
  np.testing.assert_allclose(
      dist.log_prob(data).numpy(),
      np.sum(mask * normal.log_prob(data[..., 0]).numpy()), rtol=1e-12)
  _, grad = tfp.math.value_and_gradient(
      lambda k: ShearLikelihood(k, noise, mask, operator=identity_operator)
      .log_prob(data), tf.constant(kappa))
  np.testing.assert_allclose(grad.numpy(),
                             mask * (data[..., 0] - kappa) / noise**2,
                             rtol=1e-12)


def test_copy_and_tf_function_argument():
  kappa, noise, mask, shear = _problem(np.float32)
  dist = ShearLikelihood(kappa, noise, mask, extra_variance=0.02)
  clone = dist.copy(extra_variance=0.)
  np.testing.assert_allclose(
      clone.log_prob(shear).numpy(),
      ShearLikelihood(kappa, noise, mask).log_prob(shear).numpy(), rtol=1e-6)

  @tf.function
  def log_prob(d):  # the distribution is a CompositeTensor argument
    return d.log_prob(shear)

  np.testing.assert_allclose(log_prob(dist).numpy(),
                             dist.log_prob(shear).numpy(), rtol=1e-6)


@pytest.mark.parametrize('value', [0.5, 2., -1.])
def test_mask_is_the_zero_one_indicator(value):
  kappa, noise, mask, shear = _problem()
  # bool, int and float 0/1 masks are the same likelihood.
  expected = ShearLikelihood(kappa, noise, mask).log_prob(shear)
  for same in (mask.astype(bool), mask.astype(np.int32)):
    np.testing.assert_allclose(
        ShearLikelihood(kappa, noise, same).log_prob(shear), expected,
        rtol=1e-12)
  weighted = mask.copy()
  weighted[np.argwhere(mask > 0)[0][0], np.argwhere(mask > 0)[0][1]] = value
  first = tuple(int(i) for i in np.argwhere(mask > 0)[0])
  with pytest.raises(ValueError, match=(
      rf'mask holds 1 value\(s\) other than 0 and 1; the first, '
      rf'{value}, at index \({first[0]}, {first[1]}\).*not a weight')):
    ShearLikelihood(kappa, noise, weighted)
  # A mask held in a variable is checked at run time with validate_args.
  dist = ShearLikelihood(kappa, noise, tf.Variable(weighted),
                         validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'mask holds values other than 0 and 1'):
    dist.log_prob(shear)


def test_operator_may_close_over_eager_tensors():
  # The channel count is read by tracing the operator with tf.function, which
  # captures eager tensors (a scratch tf.Graph cannot).
  kappa, noise, _, _ = _problem(n=8)
  gain = np.linspace(0.5, 1.5, 64).reshape(8, 8)
  eager_gain = tf.constant(gain)
  data = np.random.default_rng(3).normal(0., 0.1, [8, 8, 1])
  dist = ShearLikelihood(kappa, noise[..., 0],
                         operator=lambda k: (eager_gain * k)[..., tf.newaxis])
  assert dist.event_shape == (8, 8, 1)
  expected = _scipy_log_prob(data, (gain * kappa)[..., None],
                             noise[..., :1]**2, np.ones([8, 8]))
  np.testing.assert_allclose(dist.log_prob(data), expected, rtol=1e-12)
  with pytest.raises(ValueError, match=r'static channel count C, got output '
                     r'shape \(8, 8\)'):
    ShearLikelihood(kappa, noise[..., 0], operator=lambda k: eager_gain * k)


def test_chi_squared_is_log_prob_without_its_normalisation():
  rng = np.random.default_rng(3)
  n = 8
  kappa = rng.normal(0., 0.05, (3, n, n))
  noise = rng.uniform(0.1, 0.3, (n, n, 2))
  mask = (rng.random((n, n)) > 0.3).astype(float)
  shear = rng.normal(0., 0.2, (n, n, 2))
  likelihood = ShearLikelihood(kappa, noise, mask)
  log_norm = -0.5 * np.sum(mask[..., None] * np.log(2. * np.pi * noise**2))
  np.testing.assert_allclose(
      likelihood.chi_squared(shear).numpy(),
      -2. * (likelihood.log_prob(shear).numpy() - log_norm), rtol=1e-12)
  # And directly: the sum over observed pixels of the squared residuals.
  residual = shear - lensing.shear_from_convergence(kappa).numpy()
  np.testing.assert_allclose(
      likelihood.chi_squared(shear).numpy(),
      np.sum(mask[..., None] * (residual / noise)**2, axis=(-3, -2, -1)),
      rtol=1e-12)


def test_data_fit_of_the_truth_is_chi_squared_distributed():
  # The truth itself is a perfect "posterior draw": its χ² is χ²_d with
  # d = 2 × observed pixels, so z has mean 0 and std 1 over data draws.
  rng = np.random.default_rng(4)
  n, num = 16, 400
  kappa = rng.normal(0., 0.05, (n, n))
  noise = rng.uniform(0.05, 0.2, (n, n, 2))
  mask = (rng.random((n, n)) > 0.25).astype(float)
  shear = ShearLikelihood(kappa, noise, mask).sample(num, seed=(4, 5))
  fit = data_fit(np.broadcast_to(kappa, (1, num, n, n)),
                 ShearMap(shear.numpy(), noise, mask))
  d = 2 * mask.sum()
  np.testing.assert_array_equal(fit['dof'], d)
  assert abs(fit['z'].mean()) < 4. / np.sqrt(num), fit['z'].mean()
  assert abs(fit['z'].std() - 1.) < 0.15, fit['z'].std()
  # One map: Python values, one χ² per draw.
  one = data_fit(kappa[None], ShearMap(shear.numpy()[0], noise, mask))
  assert one['dof'] == d and isinstance(one['z'], float)
  assert len(one['chi2_per_sample']) == 1
  # Noise stated 20 % too large makes the fit look too good, by far.
  low = data_fit(np.broadcast_to(kappa, (1, num, n, n)),
                 ShearMap(shear.numpy(), 1.2 * noise, mask))
  assert low['z'].mean() < -3., low['z'].mean()
  with pytest.raises(ValueError, match=r'map shape \[N, N\] = \[16, 16\]'):
    data_fit(np.zeros((2, 8, 8)), ShearMap(shear.numpy()[0], noise, mask))

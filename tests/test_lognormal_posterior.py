"""Tests of tfp_massmap.lognormal_posterior against known answers.

Small maps (8² to 32²), fixed seeds. Monte-Carlo tolerances are set from the
effective sample sizes the runs reach (a few hundred to a few thousand per
pixel), so that a wrong target or a broken kernel fails by many standard
errors.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import metrics
from tfp_massmap import testing
from tfp_massmap.lognormal_posterior import lognormal_posterior
from tfp_massmap.mcmc import PosteriorSamples
from tfp_massmap.mcmc import credible_interval
from tfp_massmap.shear_map import ShearMap

F64 = tf.float64


def _pixel_ess(result):
  c = result.diagnostics['num_chains']
  s = result.samples.numpy()
  s = s.reshape(-1, c, *s.shape[1:])
  return tfp.mcmc.effective_sample_size(
      tf.constant(s), cross_chain_dims=1,
      filter_beyond_positive_pairs=True).numpy()


@pytest.mark.parametrize('case', ['shear_masked', 'identity'])
def test_gaussian_field_matches_dense_posterior(case):
  # shift=None: the posterior is Gaussian and known in closed form.
  n = 16
  field = lognormal.LognormalField(None, n, 2.0, dtype=F64)
  rng = np.random.default_rng(4)
  truth = field.sample(seed=[4, 4]).numpy()
  if case == 'identity':
    operator = likelihood.identity_operator
    noise_std = np.full([n, n], 0.02)
    mask = np.ones([n, n])
  else:
    operator = lensing.shear_from_convergence
    noise_std = rng.uniform(0.01, 0.04, size=[n, n, 2])
    mask = (rng.uniform(size=[n, n]) > 0.3).astype(float)
  clean = np.asarray(operator(tf.constant(truth)))
  data = (clean + noise_std.reshape(n, n, -1) *
          rng.standard_normal(clean.shape)) * mask[..., None]
  exact_mean, covariance = testing.exact_gaussian_posterior(
      ShearMap(data, noise_std, mask), field, operator)
  exact_std = np.sqrt(np.diag(covariance)).reshape(n, n)

  result = lognormal_posterior(
      data, noise_std, mask, field=field, num_chains=8, num_results=300,
      num_burnin_steps=200, num_leapfrog_steps=4, num_steps_between_results=1,
      operator=operator, seed=(1, 2), progress=False)

  ess = _pixel_ess(result)
  assert np.median(ess) > 500
  # The streamed mean uses twice the kept states: its error is at most
  # std/sqrt(ESS).
  z = (result.mean.numpy() - exact_mean) / (exact_std / np.sqrt(ess))
  assert np.sqrt(np.mean(z**2)) < 1.5
  assert np.max(np.abs(z)) < 5.
  np.testing.assert_allclose(result.std.numpy(), exact_std, rtol=0.12)
  assert np.mean(result.std.numpy() / exact_std) == pytest.approx(1., abs=0.02)
  d = result.diagnostics
  assert 0.6 < d['acceptance_rate'] < 0.95
  assert d['r_hat_max'] < 1.05


def test_tiny_lognormal_map_matches_importance_sampling():
  # 8² pixels of 8 arcmin, λ = 0.02 (κ std 0.011, skewness 1.7), shear on a
  # 4×4 patch with noise 0.03: the posterior mean by self-normalised
  # importance sampling from the prior, 200k draws.
  n, shift = 8, 0.02
  field = lognormal.LognormalField(shift, n, 8.0, dtype=F64)
  rng = np.random.default_rng(8)
  truth = field.sample(seed=[8, 8]).numpy()
  noise_std = np.full([n, n], 0.03)
  mask = np.zeros([n, n])
  mask[1:5, 2:6] = 1.
  clean = lensing.shear_from_convergence(truth).numpy()
  data = (clean + noise_std[..., None] * rng.standard_normal(clean.shape))
  data *= mask[..., None]

  log_w = []
  kappas = []
  for block in range(4):
    white = tf.random.stateless_normal([50_000, n, n], seed=[9, block],
                                       dtype=F64)
    kappa = field.convergence_from_white(white)
    log_w.append(likelihood.ShearLikelihood(kappa, noise_std, mask).log_prob(
        data).numpy())
    kappas.append(kappa.numpy().astype(np.float32))
  log_w = np.concatenate(log_w)
  kappas = np.concatenate(kappas)
  w = np.exp(log_w - log_w.max())
  w /= w.sum()
  assert 1. / np.sum(w**2) > 10_000  # importance-sampling ESS
  is_mean = np.einsum('s,sij->ij', w, kappas)
  # Delta-method standard error of the self-normalised estimate.
  is_se = np.sqrt(np.einsum('s,sij->ij', w**2, (kappas - is_mean)**2))

  result = lognormal_posterior(
      data, noise_std, mask, field=field, num_chains=8, num_results=200,
      num_burnin_steps=150, num_leapfrog_steps=3, num_steps_between_results=1,
      seed=(3, 4), progress=False)
  hmc_se = result.std.numpy() / np.sqrt(_pixel_ess(result))
  z = (result.mean.numpy() - is_mean) / np.sqrt(is_se**2 + hmc_se**2)
  assert np.sqrt(np.mean(z**2)) < 1.3
  assert np.max(np.abs(z)) < 4.
  # The data matter: the posterior mean is far from the prior mean (0).
  assert np.sqrt(np.mean(is_mean**2)) > 5 * np.max(is_se)


def test_no_data_gives_the_prior_spectrum_and_skewness():
  # All pixels masked: HMC samples the prior; κ must have the lognormal
  # field's power spectrum and one-point skewness.
  n, shift = 32, 0.05
  field = lognormal.LognormalField(shift, n, 2.0, dtype=F64)
  result = lognormal_posterior(
      np.zeros([n, n, 2]), np.ones([n, n]), np.zeros([n, n]), field=field,
      num_chains=8, num_results=120, num_burnin_steps=80,
      num_leapfrog_steps=4, num_steps_between_results=1, seed=(5, 6),
      progress=False)
  samples = result.samples.numpy()  # [960, n, n]
  power = np.mean(np.abs(np.fft.fft2(samples))**2, axis=0) / n**2
  expected = field.power_grid.numpy()
  k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n),
                            indexing='ij')) * n
  edges = np.array([0.5, 2, 4, 8, 16, 23])
  which = np.digitize(k, edges)
  ratio = [power[which == b].mean() / expected[which == b].mean()
           for b in range(1, len(edges))]
  np.testing.assert_allclose(ratio, 1., atol=0.04)
  # Map-mean variance: the k = 0 entry of power_grid (nonzero for lognormal).
  assert power[0, 0] / expected[0, 0] == pytest.approx(1., abs=0.2)
  skewness = np.mean(samples**3) / np.mean(samples**2)**1.5
  assert field.skewness == pytest.approx(1.16, abs=0.01)
  assert skewness == pytest.approx(field.skewness, rel=0.05)
  assert np.mean(samples**2) == pytest.approx(field.variance, rel=0.03)


def test_small_noise_posterior_mean_converges_to_truth():
  # No mask, noise std σ per shear component, σ = 3e-3 and 3e-4 as a batch
  # of two maps: the posterior mean's error and the posterior std tend to σ
  # (the Kaiser-Squires noise per pixel, A^T A = I), so the mean converges to
  # the truth in proportion to σ. The lognormal prior also fixes the map
  # mean, which shear alone cannot (κ + λ > 0 and ⟨g⟩ = 0).
  n, shift = 32, 0.05
  field = lognormal.LognormalField(shift, n, 2.0, dtype=F64)
  truth = field.sample(seed=[7, 7]).numpy()
  rng = np.random.default_rng(7)
  clean = lensing.shear_from_convergence(truth).numpy()
  sigma = np.array([3e-3, 3e-4])
  shear = clean + sigma[:, None, None, None] * rng.standard_normal(
      (2,) + clean.shape)
  noise_std = sigma[:, None, None] * np.ones([2, n, n])
  result = lognormal_posterior(
      shear, noise_std, None, field=field, num_chains=2, num_results=50,
      num_burnin_steps=250, num_leapfrog_steps=8, num_steps_between_results=1,
      preconditioner=True, seed=(7, 8), progress=False)
  mean = result.mean.numpy()
  error = np.sqrt(np.mean((mean - truth)**2, axis=(-2, -1)))  # means kept
  np.testing.assert_allclose(error / sigma, 1., atol=0.1)
  np.testing.assert_allclose(metrics.rmse(truth, mean), error, rtol=0.01)
  np.testing.assert_allclose(
      np.mean(result.std.numpy(), axis=(-2, -1)) / sigma, 1., atol=0.06)
  assert np.all(np.abs(mean.mean(axis=(-2, -1)) - truth.mean()) < 0.02 * sigma)
  assert np.std(truth) > 5 * sigma[0]


def test_batch_of_maps_and_float32():
  n = 16
  field = lognormal.LognormalField(0.035, n, 2.0)  # float32
  truth = field.sample(2, seed=[3, 3])
  shear = lensing.shear_from_convergence(truth).numpy()
  mask = np.ones([2, n, n], np.float32)
  mask[1, :8] = 0.
  result = lognormal_posterior(
      shear, np.full([n, n], 0.03, np.float32), mask, field=field,
      num_chains=2, num_results=20, num_burnin_steps=30, num_leapfrog_steps=3,
      seed=(1, 1), progress=False)
  assert result.samples.shape == [40, 2, n, n]
  assert result.mean.dtype == tf.float32
  for x in (result.mean, result.std):
    assert x.shape == [2, n, n]
  for x in (result.interval_68, result.interval_95):
    assert x.shape == [2, 2, n, n]
  lo95, lo68, hi68, hi95 = (result.interval_95[0], result.interval_68[0],
                            result.interval_68[1], result.interval_95[1])
  assert np.all(lo95 <= lo68) and np.all(lo68 <= hi68) and np.all(hi68 <= hi95)
  d = result.diagnostics
  for key in ('acceptance_rate', 'step_size', 'r_hat_max', 'ess_median',
              'ess_target_log_prob'):
    assert np.shape(d[key]) == (2,), key
  per_chain = 1 + 30 * 3 + 1 + 20 * 5 * 3
  assert d['gradient_evaluations_per_chain'] == per_chain
  assert d['gradient_evaluations'] == per_chain * 2 * 2
  assert np.all(np.isfinite(result.std.numpy()))


def test_shear_map_object_same_seed_and_the_result_type():
  n = 8
  field = lognormal.LognormalField(0.035, n, 4.0, dtype=F64)

  class Data:
    shear = np.zeros([n, n, 2])
    noise_std = np.full([n, n, 2], 0.05)
    mask = np.ones([n, n])

  kwargs = dict(field=field, num_chains=3, num_results=8, num_burnin_steps=5,
                num_leapfrog_steps=2, seed=(2, 3), progress=False)
  a = lognormal_posterior(Data(), **kwargs)
  b = lognormal_posterior(Data.shear, Data.noise_std, Data.mask, **kwargs)
  np.testing.assert_array_equal(a.samples.numpy(), b.samples.numpy())
  # The one result type of the samplers, its interval method, and a trace
  # with the chain axis second, as TFP's diagnostics read it.
  assert isinstance(a, PosteriorSamples)
  np.testing.assert_array_equal(a.interval_68.numpy(),
                                credible_interval(a.samples, 0.68).numpy())
  trace = a.trace
  assert trace.states.shape == (8, 3, n, n)
  np.testing.assert_array_equal(
      trace.states.numpy(), a.samples.numpy().reshape(8, 3, n, n))
  np.testing.assert_array_equal(trace.sigma.numpy(), np.zeros(8))
  accept = trace.accept_probability.numpy()
  assert accept.shape == (8, 3) and np.all((accept >= 0) & (accept <= 1))
  r_hat = tfp.mcmc.potential_scale_reduction(trace.states, split_chains=True)
  assert np.max(r_hat) == pytest.approx(a.diagnostics['r_hat_max'])
  per_chain = a.diagnostics['acceptance_per_chain']
  assert len(per_chain) == 3
  assert np.mean(per_chain) == pytest.approx(a.diagnostics['acceptance_rate'])


def test_operator_closing_over_eager_tensors():
  # A per-pixel response built as an eager tensor must give the same chain as
  # the same response held in numpy (same seed).
  n = 8
  field = lognormal.LognormalField(None, n, 4.0, dtype=F64)
  gain = np.linspace(0.5, 1.5, n * n).reshape(n, n)
  eager_gain = tf.constant(gain)
  kwargs = dict(field=field, num_chains=2, num_results=4, num_burnin_steps=3,
                num_leapfrog_steps=2, seed=(5, 6), progress=False)
  data = 0.01 * np.random.default_rng(5).standard_normal([n, n, 1])
  reference = lognormal_posterior(
      data, np.full([n, n], 0.05), operator=lambda k: (gain * k)[..., None],
      **kwargs)
  result = lognormal_posterior(
      data, np.full([n, n], 0.05),
      operator=lambda k: (eager_gain * k)[..., tf.newaxis], **kwargs)
  np.testing.assert_array_equal(result.samples.numpy(),
                                reference.samples.numpy())


def test_invalid_inputs_raise():
  n = 8
  field = lognormal.LognormalField(0.035, n, 4.0)
  shear = np.zeros([n, n, 2], np.float32)
  std = np.full([n, n], 0.05, np.float32)
  run = lambda **kw: lognormal_posterior(
      **{**dict(shear=shear, noise_std=std, mask=None, field=field,
                num_results=4, num_burnin_steps=2, progress=False), **kw})
  with pytest.raises(ValueError, match='LognormalField'):
    run(field=None)
  with pytest.raises(ValueError, match='map_size'):
    run(shear=np.zeros([16, 16, 2]))
  with pytest.raises(ValueError, match='noise_std must have shape'):
    run(noise_std=np.ones([n, n, 3]))
  with pytest.raises(ValueError, match='mask must have shape'):
    run(mask=np.ones([n + 1, n + 1]))
  bad = shear.copy()
  bad[0, 0, 0] = np.nan
  with pytest.raises(ValueError, match='non-finite'):
    run(shear=bad)
  bad_std = std.copy()
  bad_std[1, 1] = 0.
  with pytest.raises(ValueError, match='finite and > 0'):
    run(noise_std=bad_std)
  with pytest.raises(ValueError, match='noise_std is required'):
    run(noise_std=None)
  with pytest.raises(ValueError, match='broadcast'):
    run(shear=np.zeros([2, n, n, 2]), mask=np.ones([3, n, n]))
  with pytest.raises(ValueError, match='num_results'):
    run(num_results=2)
  with pytest.raises(ValueError, match='target_accept_prob'):
    run(target_accept_prob=1.)
  with pytest.raises(ValueError, match='step_size_jitter'):
    run(step_size_jitter=1.)
  with pytest.raises(ValueError, match='1 channels'):
    run(operator=likelihood.identity_operator)  # data has 2 channels, not 1
  # Masked pixels may hold anything.
  masked = np.ones([n, n], np.float32)
  masked[0, 0] = 0.
  bad_std[0, 0] = np.nan
  bad_std[1, 1] = 0.05
  run(shear=bad, noise_std=bad_std, mask=masked)

"""AnnealedHamiltonianMonteCarlo and the noise schedules, on analytic targets.

The targets are Gaussian with per-pixel variances v, smoothed by σ:
p_σ = N(0, v + σ²), score(x, σ) = −x / (v + σ²). Their log-density is known,
so the Metropolis log ratio and the stationary moments have exact answers.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap.mcmc import AnnealedHamiltonianMonteCarlo
from tfp_massmap.mcmc import AnnealedHamiltonianMonteCarloKernelResults
from tfp_massmap.mcmc import ConstantSchedule
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.mcmc import HeldSchedule

N = 8


def _variances(dtype=np.float32):
  """Per-pixel variances v spanning two decades, [N, N]."""
  return np.geomspace(1e-2, 1., N * N).reshape(N, N).astype(dtype)


def _gaussian_score(variance):
  variance = tf.constant(variance)

  def score(x, sigma):
    return -x / (variance + tf.square(sigma))
  return score


def _log_density(x, variance, sigma):
  total = variance + sigma**2
  return -0.5 * np.sum(x**2 / total, axis=(-2, -1))


# --- schedules ---------------------------------------------------------------


def test_geometric_schedule_values_and_end():
  schedule = GeometricSchedule(sigma_max=0.5, sigma_min=2e-3, num_levels=7,
                               steps_per_level=3)
  assert schedule.num_steps == 21
  sigmas = np.array([schedule.sigma(k).numpy() for k in range(30)])
  expected = np.repeat(np.geomspace(0.5, 2e-3, 7), 3)
  np.testing.assert_allclose(sigmas[:21], expected, rtol=1e-12)
  assert sigmas[0] == 0.5
  assert sigmas[20] == 2e-3  # exactly, not a rounded power
  np.testing.assert_array_equal(sigmas[21:], 2e-3)  # constant afterwards
  assert np.all(np.diff(sigmas) <= 0)
  # A symbolic step inside tf.function gives the same values.
  traced = tf.function(lambda k: schedule.sigma(k))
  np.testing.assert_allclose(
      [traced(tf.constant(k)).numpy() for k in (0, 4, 20, 25)],
      sigmas[[0, 4, 20, 25]], rtol=1e-12)


def test_constant_schedule():
  schedule = ConstantSchedule(0.3, num_steps=5)
  assert schedule.num_steps == 5
  assert schedule.sigma(tf.constant(3)).numpy() == 0.3


def test_held_schedule_holds_the_last_level():
  inner = GeometricSchedule(sigma_max=0.1, sigma_min=0.001, num_levels=5)
  held = HeldSchedule(inner, extra_steps=3)
  assert held.num_steps == 8
  traced = tf.function(held.sigma)
  got = [traced(tf.constant(k)).numpy() for k in range(10)]
  want = [inner.sigma(min(k, 4)).numpy() for k in range(10)]
  np.testing.assert_array_equal(got, want)
  assert got[4] == got[7] == 0.001 and got[3] > 0.001
  assert HeldSchedule(inner, extra_steps=0).num_steps == 5
  with pytest.raises(ValueError, match='extra_steps must be an integer >= 0'):
    HeldSchedule(inner, extra_steps=-1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(sigma_max=0.1, sigma_min=0.2, num_levels=3), 'sigma_min must be <='),
    (dict(sigma_max=0.1, sigma_min=-1., num_levels=3), 'sigma_min'),
    (dict(sigma_max=0.1, sigma_min=0.01, num_levels=1), 'num_levels'),
    (dict(sigma_max=0.1, sigma_min=0.01, num_levels=3, steps_per_level=0),
     'steps_per_level'),
])
def test_geometric_schedule_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    GeometricSchedule(**kwargs)


# --- kernel ------------------------------------------------------------------


def _kernel(schedule, correction, factor=0.8, leapfrog=3, variance=None):
  variance = _variances() if variance is None else variance
  return AnnealedHamiltonianMonteCarlo(
      target_score_fn=_gaussian_score(variance), schedule=schedule,
      step_size_factor=factor, num_leapfrog_steps=leapfrog,
      metropolis_correction=correction)


def _init(chains=16, seed=(1, 2), dtype=tf.float32):
  return tf.random.stateless_normal([chains, N, N], seed, dtype=dtype)


def _final_state(kernel, x, num_steps, seed):
  """The state after num_steps transitions, by sample_chain in a tf.function."""
  run = tf.function(lambda x: tfp.mcmc.sample_chain(
      num_results=1, num_burnin_steps=num_steps - 1, current_state=x,
      kernel=kernel, trace_fn=None, seed=seed)[-1], autograph=False)
  return run(x).numpy()


def test_kernel_results_structure_and_parameters():
  schedule = GeometricSchedule(1., 0.01, num_levels=4, steps_per_level=2)
  kernel = _kernel(schedule, correction=True)
  assert kernel.is_calibrated
  assert not _kernel(schedule, correction=False).is_calibrated
  assert kernel.parameters['num_leapfrog_steps'] == 3
  assert kernel.schedule is schedule and kernel.step_size_factor == 0.8
  copy = kernel.copy(num_leapfrog_steps=5)
  assert copy.num_leapfrog_steps == 5 and copy.schedule is schedule

  x = _init()
  results = kernel.bootstrap_results(x)
  assert isinstance(results, AnnealedHamiltonianMonteCarloKernelResults)
  assert results.step.dtype == tf.int32 and int(results.step) == 0
  assert float(results.sigma) == 1.
  np.testing.assert_allclose(float(results.step_size), 0.8, rtol=1e-6)
  assert int(results.num_score_evaluations) == 1
  _, results = kernel.one_step(x, results, seed=(3, 4))
  assert int(results.step) == 1
  assert results.target_score.shape == x.shape
  assert results.proposed_state.shape == x.shape
  assert results.initial_momentum.shape == x.shape
  assert results.is_accepted.shape == [16]
  assert results.is_accepted.dtype == tf.bool
  assert results.log_accept_ratio.shape == [16]
  assert results.num_accepted.shape == [16]
  # Same noise level as bootstrap: the cached score is reused.
  assert int(results.num_score_evaluations) == 1 + 3


@pytest.mark.parametrize('correction', [True, False])
def test_cached_score_matches_fresh_evaluation_after_sigma_change(correction):
  variance = _variances()
  score_fn = _gaussian_score(variance)
  schedule = GeometricSchedule(1., 0.01, num_levels=4, steps_per_level=2)
  kernel = _kernel(schedule, correction=correction)
  x = _init()
  results = kernel.bootstrap_results(x)
  seeds = tf.random.experimental.stateless_split([5, 6], schedule.num_steps)
  for k in range(schedule.num_steps):
    x, results = kernel.one_step(x, results, seed=seeds[k])
    np.testing.assert_allclose(float(results.sigma),
                               schedule.sigma(k).numpy(), rtol=1e-6)
    # With correction the cache is for this step's σ, without it for the
    # next step's (the end-point score is evaluated there directly).
    cache_sigma = schedule.sigma(k if correction else k + 1).numpy()
    np.testing.assert_allclose(float(results.target_score_sigma), cache_sigma,
                               rtol=1e-6)
    np.testing.assert_allclose(
        results.target_score.numpy(),
        score_fn(x, results.target_score_sigma).numpy(), rtol=1e-5, atol=1e-5)
  # 1 (bootstrap) + 3 per step + 1 refresh at each of the 3 later levels
  # with correction; no refresh without.
  expected = 1 + 3 * schedule.num_steps + (3 if correction else 0)
  assert int(results.num_score_evaluations) == expected


def test_stale_cache_is_recomputed_current_one_is_reused():
  schedule = ConstantSchedule(0.5, num_steps=3)
  kernel = _kernel(schedule, correction=True)
  x = _init()
  good = kernel.bootstrap_results(x)
  reference, _ = kernel.one_step(x, good, seed=(7, 8))
  garbage = tf.fill(x.shape, 1e3)
  # A cache labelled with another σ is recomputed: same transition.
  stale = good._replace(target_score=garbage,
                        target_score_sigma=tf.constant(0.9))
  state, results = kernel.one_step(x, stale, seed=(7, 8))
  np.testing.assert_allclose(state.numpy(), reference.numpy(), rtol=1e-6)
  assert int(results.num_score_evaluations) == 1 + 1 + 3
  # A cache labelled with this σ is trusted (no evaluation), so a wrong one
  # changes the transition.
  wrong = good._replace(target_score=garbage)
  _, results = kernel.one_step(x, wrong, seed=(7, 8))
  assert int(results.num_score_evaluations) == 1 + 3
  assert not np.allclose(results.proposed_state.numpy(), reference.numpy())


def test_log_accept_ratio_is_exact_for_gaussian_target():
  variance = _variances(np.float64)
  sigma = 0.1
  kernel = _kernel(ConstantSchedule(sigma, 1), correction=True, factor=1.2,
                   leapfrog=4, variance=variance)
  # Start in the target, where the energy error has either sign.
  x = np.sqrt(variance + sigma**2) * _init(chains=32, dtype=tf.float64)
  _, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=(9, 9))
  x1 = results.proposed_state.numpy()
  p0 = results.initial_momentum.numpy()
  p1 = results.final_momentum.numpy()
  exact = (_log_density(x1, variance, sigma) -
           _log_density(x.numpy(), variance, sigma) -
           0.5 * np.sum(p1**2, axis=(-2, -1)) +
           0.5 * np.sum(p0**2, axis=(-2, -1)))
  # Not trivially zero: the energy error is O(1) at this step size.
  assert np.std(exact) > 0.1
  np.testing.assert_allclose(results.log_accept_ratio.numpy(), exact,
                             rtol=1e-9, atol=1e-9)
  # Accept exactly when log u < log ratio: some but not all here.
  accepted = results.is_accepted.numpy()
  assert 0 < accepted.sum() < accepted.size


def test_energy_error_without_correction_is_that_of_the_first_steps():
  """Without correction the kernel checks the first L − 1 leapfrog steps at
  no extra cost: the same as a corrected kernel with L − 1 steps (same seed,
  same momentum, same path), whose ratio is exact for a Gaussian."""
  variance = _variances(np.float64)
  sigma = 0.1
  x = np.sqrt(variance + sigma**2) * _init(chains=32, dtype=tf.float64)
  results = {}
  for correction, leapfrog in ((False, 4), (True, 3)):
    kernel = _kernel(ConstantSchedule(sigma, 1), correction=correction,
                     factor=1.2, leapfrog=leapfrog, variance=variance)
    _, results[correction] = kernel.one_step(
        x, kernel.bootstrap_results(x), seed=(9, 9))
  uncorrected, corrected = results[False], results[True]
  assert np.std(corrected.log_accept_ratio.numpy()) > 0.1  # not trivially 0
  np.testing.assert_allclose(uncorrected.energy_error.numpy(),
                             -corrected.log_accept_ratio.numpy(),
                             rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(corrected.energy_error.numpy(),
                             -corrected.log_accept_ratio.numpy())
  # The would-be acceptance probability min(1, exp(−ΔH)), summed.
  np.testing.assert_allclose(
      uncorrected.sum_accept_probability.numpy(),
      np.minimum(1., np.exp(-uncorrected.energy_error.numpy())), rtol=1e-12)
  # Still 4 score evaluations per transition, plus bootstrap.
  assert int(uncorrected.num_score_evaluations) == 1 + 4
  assert np.all(uncorrected.log_accept_ratio.numpy() == 0.)


def test_one_leapfrog_step_without_correction_checks_nothing():
  kernel = _kernel(ConstantSchedule(0.1, 1), correction=False, leapfrog=1)
  x = _init()
  _, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=(1, 1))
  np.testing.assert_array_equal(results.energy_error.numpy(), 0.)


def test_max_abs_state_is_a_running_max_that_keeps_non_finite():
  kernel = _kernel(ConstantSchedule(0.1, 3), correction=False)
  x = _init(chains=3).numpy() * 0.1
  x[2, 0, 0] = 50.
  results = kernel.bootstrap_results(x)
  np.testing.assert_allclose(results.max_abs_state.numpy(),
                             np.abs(x).max(axis=(1, 2)))
  # A chain that was far out earlier (chain 0) keeps its record after the
  # state comes back; a NaN (chain 1) is recorded as inf.
  x = _init(chains=3).numpy() * 0.1
  x[1, 3, 3] = np.nan
  results = results._replace(
      max_abs_state=tf.constant([1e3, 0., 0.], tf.float32))
  state, results = kernel.one_step(x, results, seed=(2, 2))
  max_abs = results.max_abs_state.numpy()
  assert max_abs[0] == 1e3
  assert max_abs[1] == np.inf
  assert max_abs[2] == pytest.approx(np.abs(state[2].numpy()).max())
  # The NaN chain's energy error is NaN: its acceptance probability is 0.
  assert results.sum_accept_probability.numpy()[1] == 0.


@pytest.mark.parametrize('correction, expected_variance', [
    # MALA leaves N(0, 1) invariant exactly; ULA with step h = ε²/2 has
    # stationary variance 1 / (1 − ε²/4) on a unit Gaussian.
    (True, 1.),
    (False, 1. / (1. - 0.8**2 / 4.)),
])
def test_stationary_variance_with_and_without_correction(
    correction, expected_variance):
  sigma = 1.  # score −x/σ² : the unit Gaussian; ε = 0.8.
  kernel = _kernel(ConstantSchedule(sigma, 100), correction=correction,
                   factor=0.8, leapfrog=1,
                   variance=np.zeros([N, N], np.float32))
  final = _final_state(kernel, _init(chains=512, seed=(11, 12)), 100,
                       seed=(13, 14))
  # 512 · 64 draws: the variance is known to about 1 %.
  np.testing.assert_allclose(np.var(final), expected_variance, rtol=0.04)


def test_annealing_reaches_the_smoothed_target():
  variance = _variances()
  schedule = GeometricSchedule(3., 0.01, num_levels=40)
  kernel = _kernel(schedule, correction=False, factor=1.0, leapfrog=6)
  final = _final_state(kernel, 3. * _init(chains=512, seed=(15, 16)),
                       schedule.num_steps, seed=(17, 18))
  ratio = np.var(final, axis=0) / (variance + 0.01**2)
  # 512 chains: each per-pixel variance is known to about 6 %.
  np.testing.assert_allclose(np.mean(ratio), 1., atol=0.03)
  assert np.all(np.abs(ratio - 1.) < 0.3)


def _run_chain(kernel, seed):
  return tfp.mcmc.sample_chain(
      num_results=3, num_steps_between_results=1,
      current_state=_init(), kernel=kernel,
      trace_fn=lambda _, r: (r.sigma, r.is_accepted, r.num_score_evaluations),
      seed=seed)


def test_same_seed_same_chain_eager_and_tf_function():
  schedule = GeometricSchedule(1., 0.05, num_levels=3, steps_per_level=2)
  kernel = _kernel(schedule, correction=True)
  eager = _run_chain(kernel, seed=(21, 22))
  again = _run_chain(kernel, seed=(21, 22))
  other = _run_chain(kernel, seed=(21, 23))
  graph = tf.function(lambda: _run_chain(kernel, seed=(21, 22)),
                      autograph=False)()
  np.testing.assert_array_equal(eager.all_states.numpy(),
                                again.all_states.numpy())
  assert not np.allclose(eager.all_states.numpy(), other.all_states.numpy())
  np.testing.assert_allclose(graph.all_states.numpy(),
                             eager.all_states.numpy(), rtol=1e-5, atol=1e-6)
  for a, b in zip(graph.trace, eager.trace):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
  # σ traced per result: steps 1, 3, 5 of the schedule.
  np.testing.assert_allclose(eager.trace[0].numpy(),
                             [schedule.sigma(k).numpy() for k in (1, 3, 5)],
                             rtol=1e-6)


@pytest.mark.parametrize('kwargs, match', [
    (dict(target_score_fn=None), 'target_score_fn'),
    (dict(schedule=object()), 'schedule'),
    (dict(step_size_factor=-1.), 'step_size_factor'),
    (dict(step_size_factor=1.5), r'step_size_factor must be in \(0, √2'),
    (dict(num_leapfrog_steps=0), 'num_leapfrog_steps'),
    (dict(num_leapfrog_steps=2.5), 'num_leapfrog_steps'),
    (dict(metropolis_correction='yes'), 'metropolis_correction'),
])
def test_bad_kernel_arguments(kwargs, match):
  args = dict(target_score_fn=_gaussian_score(_variances()),
              schedule=ConstantSchedule(0.1, 1), step_size_factor=0.5,
              num_leapfrog_steps=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    AnnealedHamiltonianMonteCarlo(**args)

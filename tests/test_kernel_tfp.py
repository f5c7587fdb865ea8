"""AnnealedHamiltonianMonteCarlo as a TFP kernel: step size, parts, tensors.

The step-size factor lives in the kernel results, so TFP's step-size
adaptation kernels act on it and the kernel's own adaptation can follow a
target acceptance; states may be lists of parts and the leapfrog count a
tensor, as for `tfp.mcmc.HamiltonianMonteCarlo`. `JitteredStepSize` jitters
an HMC step. The targets are Gaussian with per-pixel variances v, smoothed
by σ: score(x, σ) = −x / (v + σ²), so the energy change along a trajectory
and the leapfrog end point have exact answers.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import unnest

from tfp_massmap.mcmc import annealed_hmc
from tfp_massmap.mcmc import driver
from tfp_massmap.mcmc import ConstantSchedule
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.mcmc import jittered_step_size

N = 16


def _variances(n=N, dtype=np.float32, smallest=1e-4):
  """Per-pixel variances from ``smallest`` to 1, [n, n]."""
  return np.geomspace(smallest, 1., n * n).reshape(n, n).astype(dtype)


def _score_fn(variance):
  variance = tf.constant(variance)
  return lambda x, sigma: -x / (variance + tf.square(sigma))


def _kernel(factor, correction=True, leapfrog=3, sigma=0.1, num_steps=100,
            variance=None, **kwargs):
  variance = _variances() if variance is None else variance
  return annealed_hmc.AnnealedHamiltonianMonteCarlo(
      target_score_fn=_score_fn(variance),
      schedule=ConstantSchedule(sigma, num_steps), step_size_factor=factor,
      num_leapfrog_steps=leapfrog, metropolis_correction=correction, **kwargs)


def _equilibrium(chains=64, sigma=0.1, variance=None, seed=(1, 2),
                 dtype=tf.float32):
  """Draws from the smoothed target N(0, v + σ²), [chains, n, n]."""
  variance = _variances() if variance is None else variance
  return np.sqrt(variance + sigma**2) * tf.random.stateless_normal(
      [chains, *variance.shape], seed, dtype=dtype)


def _acceptance_and_steps(kernel, x, num_steps=100, seed=(3, 4)):
  """Per-transition mean acceptance and leapfrog step, in a tf.function."""
  run = tf.function(lambda: tfp.mcmc.sample_chain(
      num_steps, x, kernel=kernel, seed=seed,
      trace_fn=lambda _, r: (
          tf.reduce_mean(tf.cast(unnest.get_innermost(r, 'is_accepted'),
                                 tf.float32)),
          unnest.get_innermost(r, 'leapfrog_step_size'))),
                    autograph=False)
  acceptance, steps = run().trace
  return acceptance.numpy(), steps.numpy()


# --- the step size in the results -------------------------------------------


def test_results_step_size_is_the_factor_the_next_transition_uses():
  sigma = 0.5
  kernel = _kernel(0.8, correction=False, leapfrog=1, sigma=sigma,
                   variance=_variances(dtype=np.float64))
  x = _equilibrium(sigma=sigma, dtype=tf.float64,
                   variance=_variances(dtype=np.float64))
  results = kernel.bootstrap_results(x)
  assert float(results.step_size) == 0.8
  assert float(results.leapfrog_step_size) == pytest.approx(0.8 * sigma)
  # Whatever sets the factor (an adaptation kernel) sets the leapfrog step
  # ε = factor · σ of the next transition: x1 = x0 + ε p0 + ε²/2 g0.
  results = results._replace(step_size=tf.constant(0.3, tf.float64))
  _, results = kernel.one_step(x, results, seed=(5, 6))
  eps = 0.3 * sigma
  g0 = _score_fn(_variances(dtype=np.float64))(x, tf.constant(sigma,
                                                               tf.float64))
  expected = x + eps * results.initial_momentum + 0.5 * eps**2 * g0
  np.testing.assert_allclose(results.proposed_state.numpy(), expected.numpy(),
                             rtol=1e-12, atol=1e-14)
  assert float(results.leapfrog_step_size) == pytest.approx(eps, rel=1e-12)
  assert float(results.step_size) == 0.3  # kept for the next transition


@pytest.mark.parametrize('wrapper', ['simple', 'dual_averaging'])
@pytest.mark.parametrize('factor, direction', [(1.3, -1), (0.3, +1)])
def test_tfp_step_size_adaptation_acts_on_the_step(wrapper, factor,
                                                   direction):
  x = _equilibrium()
  kernel = _kernel(factor)
  unwrapped, _ = _acceptance_and_steps(kernel, x)
  if wrapper == 'simple':
    adaptive = tfp.mcmc.SimpleStepSizeAdaptation(
        kernel, num_adaptation_steps=60, target_accept_prob=0.75,
        adaptation_rate=0.05)
  else:
    adaptive = tfp.mcmc.DualAveragingStepSizeAdaptation(
        kernel, num_adaptation_steps=60, target_accept_prob=0.75)
  acceptance, steps = _acceptance_and_steps(adaptive, x)
  # Unwrapped, the acceptance is far from 0.75 (5 % at factor 1.3, 93 % at
  # 0.3 on this 256-pixel target); wrapped, the leapfrog step moves the
  # right way and the acceptance after adaptation is near the target.
  assert abs(unwrapped[-40:].mean() - 0.75) > 0.15
  assert steps[0] == pytest.approx(factor * 0.1)
  assert np.sign(steps[-1] - steps[0]) == direction
  assert abs(acceptance[-40:].mean() - 0.75) < 0.1


def test_uncorrected_kernel_adapts_to_the_would_be_acceptance():
  """Without correction log_accept_ratio is 0; the module's getter gives the
  acceptance a Metropolis test would have applied to the first L − 1 steps."""
  x = _equilibrium()
  kernel = _kernel(1.3, correction=False, leapfrog=4)
  # Not dual averaging: its first steps are up to 10 times the initial one,
  # and an uncorrected kernel does not reject the exploding trajectories.
  adaptive = tfp.mcmc.SimpleStepSizeAdaptation(
      kernel, num_adaptation_steps=60, target_accept_prob=0.75,
      adaptation_rate=0.05,
      log_accept_prob_getter_fn=annealed_hmc.log_accept_prob_getter_fn)
  run = tf.function(lambda: tfp.mcmc.sample_chain(
      100, x, kernel=adaptive, seed=(3, 4),
      trace_fn=lambda _, r: r.inner_results.energy_error), autograph=False)
  with pytest.warns(UserWarning, match='not calibrated'):
    energy_error = run().trace.numpy()
  would_be = np.exp(-np.maximum(energy_error, 0.)).mean(axis=1)
  assert would_be[0] < 0.3
  assert abs(would_be[-40:].mean() - 0.75) < 0.1


def test_log_accept_prob_getter():
  kernel = tfp.mcmc.SimpleStepSizeAdaptation(_kernel(0.5), 10)
  wrapped = kernel.bootstrap_results(_equilibrium(chains=4))
  results = wrapped.inner_results._replace(
      energy_error=tf.constant([-1., 0.5, np.nan, np.inf]),
      log_accept_ratio=tf.constant([1., -0.5, np.nan, -np.inf]))
  wrapped = wrapped._replace(inner_results=results)
  expected = [0., -0.5, -np.inf, -np.inf]
  np.testing.assert_array_equal(
      annealed_hmc.log_accept_prob_getter_fn(results).numpy(), expected)
  np.testing.assert_array_equal(
      annealed_hmc.log_accept_prob_getter_fn(wrapped).numpy(), expected)


# --- the kernel's own adaptation ----------------------------------------------


def test_target_accept_prob_update_rule():
  x = _equilibrium(dtype=tf.float64, variance=_variances(dtype=np.float64))
  kernel = _kernel(0.9, variance=_variances(dtype=np.float64),
                   target_accept_prob=0.65, adaptation_rate=0.7)
  results = kernel.bootstrap_results(x)
  _, results = kernel.one_step(x, results, seed=(7, 8))
  mean_accept = np.mean(np.minimum(1., np.exp(-results.energy_error.numpy())))
  assert 0.05 < mean_accept < 0.95  # the update has a sign to get right
  assert float(results.leapfrog_step_size) == pytest.approx(0.09)
  np.testing.assert_allclose(
      float(results.step_size), 0.9 * math.exp(0.7 * (mean_accept - 0.65)),
      rtol=1e-12)
  # An acceptance above the target grows the factor up to √2, no further:
  # on a wide target (v = 1 ≫ σ²) nearly every proposal is accepted.
  wide = np.ones([N, N])
  kernel = _kernel(1.4, variance=wide, target_accept_prob=0.65)
  x = _equilibrium(variance=wide, dtype=tf.float64)
  _, results = kernel.one_step(x, kernel.bootstrap_results(x), seed=(7, 8))
  mean_accept = np.mean(np.exp(-np.maximum(results.energy_error.numpy(), 0.)))
  assert 1.4 * math.exp(mean_accept - 0.65) > 1.5
  assert float(results.step_size) == annealed_hmc.MAX_STABLE_STEP_SIZE_FACTOR


# Without correction sample_chain warns that the kernel is not calibrated.
@pytest.mark.filterwarnings('ignore:supplied `TransitionKernel` is not')
@pytest.mark.parametrize('correction, leapfrog', [(True, 3), (False, 4)])
@pytest.mark.parametrize('factor', [1.3, 0.05])
def test_target_accept_prob_reaches_the_target(correction, leapfrog, factor):
  kernel = _kernel(factor, correction=correction, leapfrog=leapfrog,
                   target_accept_prob=0.65)
  run = tf.function(lambda: tfp.mcmc.sample_chain(
      60, _equilibrium(), kernel=kernel, seed=(9, 10),
      trace_fn=lambda _, r: (r.energy_error, r.step_size)), autograph=False)
  energy_error, factors = [t.numpy() for t in run().trace]
  acceptance = np.exp(-np.maximum(energy_error, 0.)).mean(axis=1)
  assert abs(factors[-1] - factor) > 0.1
  assert abs(acceptance[-30:].mean() - 0.65) < 0.1


def test_adaptation_follows_the_noise_levels():
  """On an annealed denoising posterior (prior variance v, noise variance
  1e-4, both smoothed by σ: curvature up to 2/σ², as for mass maps) a fixed
  factor 1.3 rejects everything at σ = 1; adapted, each level's acceptance
  is near the target with its own factor, and where even √2 is accepted
  more often than the target (σ = 1e-3) the factor stops at √2."""
  variance = tf.constant(_variances())

  def score(x, sigma):
    return -x / (variance + tf.square(sigma)) - x / (1e-4 + tf.square(sigma))
  schedule = GeometricSchedule(1., 1e-3, num_levels=4, steps_per_level=15)
  fixed = annealed_hmc.AnnealedHamiltonianMonteCarlo(
      score, schedule, step_size_factor=1.3, num_leapfrog_steps=3,
      metropolis_correction=True)
  x = tf.random.stateless_normal([64, N, N], (11, 12))
  fixed_acceptance, _ = _acceptance_and_steps(fixed, x, schedule.num_steps)
  acceptance, steps = _acceptance_and_steps(
      fixed.copy(target_accept_prob=0.65), x, schedule.num_steps)
  sigmas = np.array([schedule.sigma(k).numpy()
                     for k in range(schedule.num_steps)])
  # Per level (rows): the last 10 of its 15 transitions.
  factors = (steps / sigmas).reshape(4, 15)[:, -1]
  fixed_acceptance = fixed_acceptance.reshape(4, 15)[:, 5:].mean(axis=1)
  acceptance = acceptance.reshape(4, 15)[:, 5:].mean(axis=1)
  assert fixed_acceptance[0] < 0.1
  np.testing.assert_allclose(acceptance[:3], 0.65, atol=0.1)
  assert max(factors[:3]) / min(factors[:3]) > 1.3
  assert acceptance[3] > 0.9
  assert factors[3] == pytest.approx(annealed_hmc.MAX_STABLE_STEP_SIZE_FACTOR)


# --- lists of state parts and per-chain steps ---------------------------------


def _two_part_problem(chains=32, sigma=0.1):
  """A map part [C, 8, 8] and a vector part [C, 5], float64, at equilibrium."""
  variances = [_variances(8, np.float64), np.geomspace(0.01, 1., 5)]
  state = [np.sqrt(v + sigma**2) * tf.random.stateless_normal(
      [chains, *v.shape], (13, i), dtype=tf.float64)
           for i, v in enumerate(variances)]

  def score(parts, sigma):
    return [-x / (tf.constant(v) + tf.square(sigma))
            for x, v in zip(parts, variances)]
  return variances, state, score


def _log_density(x, variance, sigma):
  axes = tuple(range(1, x.ndim))
  return -0.5 * np.sum(x**2 / (variance + sigma**2), axis=axes)


def test_list_of_parts_log_accept_ratio_is_exact():
  """Two parts of different shapes, a factor per part, one of them per
  chain: the Metropolis ratio is still the exact energy change."""
  sigma = 0.1
  variances, state, score = _two_part_problem(sigma=sigma)
  per_chain = tf.constant(np.linspace(0.6, 1.3, 32).reshape(32, 1, 1))
  kernel = annealed_hmc.AnnealedHamiltonianMonteCarlo(
      score, ConstantSchedule(sigma, 1), step_size_factor=[per_chain, 1.1],
      num_leapfrog_steps=4, metropolis_correction=True)
  _, results = kernel.one_step(state, kernel.bootstrap_results(state),
                               seed=(14, 15))
  assert isinstance(results.proposed_state, list)
  exact = 0.
  for x0, x1, p0, p1, v in zip(state, results.proposed_state,
                               results.initial_momentum,
                               results.final_momentum, variances):
    axes = tuple(range(1, x0.shape.rank))
    exact = exact + (
        _log_density(x1.numpy(), v, sigma) - _log_density(x0.numpy(), v, sigma)
        - 0.5 * np.sum(p1.numpy()**2, axis=axes)
        + 0.5 * np.sum(p0.numpy()**2, axis=axes))
  assert np.std(exact) > 0.1
  np.testing.assert_allclose(results.log_accept_ratio.numpy(), exact,
                             rtol=1e-9, atol=1e-9)
  # One decision per chain for both parts.
  accepted = results.is_accepted.numpy()
  assert 0 < accepted.sum() < accepted.size
  # The per-chain factor gives a per-chain leapfrog step.
  np.testing.assert_allclose(results.leapfrog_step_size[0].numpy().ravel(),
                             per_chain.numpy().ravel() * sigma)


def test_list_of_parts_sample_the_target():
  """MALA (one leapfrog step, corrected) leaves each part's N(0, 1)
  invariant, so after 100 transitions both parts have unit variance."""
  variances = [np.zeros([8, 8], np.float32), np.zeros([5], np.float32)]

  def score(parts, sigma):
    return [-x / (v + tf.square(sigma)) for x, v in zip(parts, variances)]
  kernel = annealed_hmc.AnnealedHamiltonianMonteCarlo(
      score, ConstantSchedule(1., 100), step_size_factor=0.8,
      num_leapfrog_steps=1, metropolis_correction=True)
  state = [3. * tf.random.stateless_normal([512, 8, 8], (16, 17)),
           tf.zeros([512, 5])]
  run = tf.function(lambda: tfp.mcmc.sample_chain(
      1, state, num_burnin_steps=99, kernel=kernel, trace_fn=None,
      seed=(18, 19)), autograph=False)
  final = [part[-1].numpy() for part in run()]
  np.testing.assert_allclose(np.var(final[0]), 1., rtol=0.04)
  np.testing.assert_allclose(np.var(final[1]), 1., rtol=0.08)


@pytest.mark.parametrize('trace', [False, True])
def test_compiled_chain_returns_each_parts_final_state(trace):
  """`driver.compile_chain` on a list state gives every part's last state.

  Each part has its own shape, so a driver that returned the last kept
  value of the last part only (``all_states[-1]``) fails here.
  """
  def score(parts, sigma):
    return [-x / (1. + tf.square(sigma)) for x in parts]
  kernel = annealed_hmc.AnnealedHamiltonianMonteCarlo(
      score, ConstantSchedule(1., 6), step_size_factor=0.8,
      num_leapfrog_steps=1)
  state = [tf.ones([4, 3, 3]), tf.ones([4, 2])]
  run = driver.compile_chain(lambda: kernel, jit_compile=False,
                             trace_fn=(lambda s, r: s[1]) if trace else None)
  out = run(state, kernel.bootstrap_results(state), (1, 2), 3)
  final = out[0]
  assert [tuple(p.shape) for p in final] == [(4, 3, 3), (4, 2)]
  expected = tfp.mcmc.sample_chain(
      1, state, num_burnin_steps=2, kernel=kernel, trace_fn=None, seed=(1, 2))
  for got, want in zip(final, expected):
    np.testing.assert_allclose(got, want[-1], rtol=1e-6)
  if trace:
    assert tuple(out[2].shape) == (3, 4, 2)


def test_one_part_list_is_the_tensor_state():
  kernel = _kernel(0.8, num_steps=3)
  x = _equilibrium(chains=8)
  tensor_run = tfp.mcmc.sample_chain(3, x, kernel=kernel, seed=(20, 21),
                                     trace_fn=None)
  list_kernel = kernel.copy(target_score_fn=lambda parts, sigma: [
      kernel.target_score_fn(parts[0], sigma)])
  list_run = tfp.mcmc.sample_chain(3, [x], kernel=list_kernel, seed=(20, 21),
                                   trace_fn=None)
  np.testing.assert_array_equal(list_run[0].numpy(), tensor_run.numpy())


@pytest.mark.parametrize('make_state, score, factor, match', [
    (lambda x: [x, x], lambda parts, sigma: parts[0], 0.5,
     r'structure of the state, a list of 2 tensors; got a tensor'),
    (lambda x: x, lambda x, sigma: [x], 0.5,
     r'structure of the state, one tensor; got a list of 1'),
    (lambda x: [x, x], lambda parts, sigma: [parts[0], parts[1][..., :2]],
     0.5, r'part 1 has shape \(8, 16, 16\) .* its score shape \(8, 16, 2\)'),
    (lambda x: [x, tf.cast(x, tf.float64)], lambda parts, sigma: parts, 0.5,
     r'dtype of part 0, float32; part 1 has float64'),
    (lambda x: [x, x[:4]], lambda parts, sigma: parts, 0.5,
     r'chain axes \(8,\) of part 0 .* part 1 has shape \(4, 16, 16\)'),
    (lambda x: [x, x], lambda parts, sigma: parts, [0.5, 0.5, 0.5],
     r'one per state part \(2\), got a list of 3'),
    (lambda x: x[0, 0], lambda x, sigma: x, 0.5, r'shape \[\.\.\., N, N\]'),
])
def test_bad_state_parts(make_state, score, factor, match):
  kernel = annealed_hmc.AnnealedHamiltonianMonteCarlo(
      score, ConstantSchedule(0.1, 1), step_size_factor=factor,
      num_leapfrog_steps=2)
  with pytest.raises(ValueError, match=match):
    kernel.bootstrap_results(make_state(_equilibrium(chains=8)))


# --- tensor leapfrog counts ---------------------------------------------------


def test_tensor_num_leapfrog_steps_matches_the_int_and_does_not_retrace():
  x = _equilibrium(chains=8)

  @tf.function(autograph=False)
  def run(num_leapfrog_steps):
    kernel = _kernel(0.8, leapfrog=num_leapfrog_steps, num_steps=3)
    out = tfp.mcmc.sample_chain(
        3, x, kernel=kernel, seed=(22, 23), trace_fn=None,
        return_final_kernel_results=True)
    return out.all_states, out.final_kernel_results.num_score_evaluations

  for steps in (2, 5):
    states, evaluations = run(tf.constant(steps))
    expected = tfp.mcmc.sample_chain(3, x, kernel=_kernel(0.8, leapfrog=steps),
                                     seed=(22, 23), trace_fn=None)
    np.testing.assert_allclose(states.numpy(), expected.numpy(), rtol=1e-5,
                               atol=1e-6)
    assert int(evaluations) == 1 + 3 * steps
  assert run.experimental_get_tracing_count() == 1


# --- argument checks ----------------------------------------------------------


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_leapfrog_steps=tf.constant(2.)),
     'num_leapfrog_steps must be an integer, got a tensor of dtype float32'),
    (dict(target_accept_prob=1.), r'target_accept_prob must be in \(0, 1\)'),
    (dict(target_accept_prob=0.), 'target_accept_prob must be a positive'),
    (dict(target_accept_prob=0.6, metropolis_correction=False,
          num_leapfrog_steps=1),
     'needs metropolis_correction=True or num_leapfrog_steps >= 2'),
    (dict(adaptation_rate=-1.), 'adaptation_rate'),
    (dict(step_size_factor=[0.5, 1.5]), r'step_size_factor must be in \(0, √2'),
])
def test_bad_adaptation_arguments(kwargs, match):
  args = dict(target_score_fn=_score_fn(_variances()),
              schedule=ConstantSchedule(0.1, 1), step_size_factor=0.5,
              num_leapfrog_steps=2, metropolis_correction=True)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    annealed_hmc.AnnealedHamiltonianMonteCarlo(**args)


# --- JitteredStepSize ---------------------------------------------------------


def _log_prob(x):
  return -0.5 * tf.reduce_sum(x**2 / tf.constant(_variances(8)), axis=[-2, -1])


def test_jittered_step_size_draws_one_factor_per_chain():
  jitter = 0.25
  hmc = tfp.mcmc.HamiltonianMonteCarlo(
      _log_prob, step_size=tf.constant(0.2), num_leapfrog_steps=1,
      store_parameters_in_results=True)
  kernel = jittered_step_size.JitteredStepSize(hmc, jitter=jitter)
  x = tf.random.stateless_normal([256, 8, 8], (24, 25))
  results = kernel.bootstrap_results(x)
  _, results = kernel.one_step(x, results, seed=(26, 27))
  # One leapfrog step: x1 = x0 + ε p0 + ε²/2 ∇log p(x0), solved for ε per
  # chain from the proposal's displacement along the momentum.
  inner = results.inner_results
  p0 = tf.nest.flatten(inner.proposed_results.initial_momentum)[0]
  grad = -x / tf.constant(_variances(8))
  displacement = tf.nest.flatten(inner.proposed_state)[0] - x
  eps = np.array([
      np.roots([0.5 * np.sum(g * p), np.sum(p * p), -np.sum(d * p)]).max()
      for g, p, d in zip(grad.numpy(), p0.numpy(), displacement.numpy())])
  factors = eps / 0.2
  assert np.all((factors > 1. - jitter - 1e-4) & (factors < 1. + jitter + 1e-4))
  assert np.std(factors) == pytest.approx(2 * jitter / math.sqrt(12), rel=0.2)
  # The un-jittered step is kept everywhere, with its shape.
  assert float(results.step_size) == pytest.approx(0.2)
  assert inner.accepted_results.step_size.shape == []
  assert inner.proposed_results.step_size.shape == []


def test_jittered_step_size_under_dual_averaging():
  hmc = tfp.mcmc.HamiltonianMonteCarlo(
      _log_prob, step_size=tf.fill([1, 1], 1.5), num_leapfrog_steps=4,
      store_parameters_in_results=True)
  kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
      jittered_step_size.JitteredStepSize(hmc, jitter=0.2),
      num_adaptation_steps=60, target_accept_prob=0.75,
      step_size_setter_fn=jittered_step_size.step_size_setter_fn,
      step_size_getter_fn=jittered_step_size.step_size_getter_fn,
      log_accept_prob_getter_fn=jittered_step_size.log_accept_prob_getter_fn)
  run = tf.function(lambda: tfp.mcmc.sample_chain(
      100, tf.random.stateless_normal([64, 8, 8], (28, 29)), kernel=kernel,
      seed=(30, 31), trace_fn=lambda _, r: (
          r.inner_results.step_size,
          tf.reduce_mean(tf.cast(r.inner_results.inner_results.is_accepted,
                                 tf.float32)))), autograph=False)
  steps, acceptance = [t.numpy() for t in run().trace]
  assert steps[-1].item() < 1.
  assert abs(acceptance[-40:].mean() - 0.75) < 0.1


@pytest.mark.parametrize('jitter', [-0.1, 1., 'a', True])
def test_jittered_step_size_bad_jitter(jitter):
  with pytest.raises(ValueError, match=r'jitter must be a float in \[0, 1\)'):
    jittered_step_size.JitteredStepSize(None, jitter=jitter)

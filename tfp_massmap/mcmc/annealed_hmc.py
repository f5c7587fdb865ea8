"""Hamiltonian Monte Carlo on a target known only through its score.

The prior of a mass map is known only through a score s_σ(x) = ∇log p_σ(x)
of the prior convolved with N(0, σ²) (a trained denoiser, or the analytic
Gaussian prior), so the annealed posterior is known only through its score
∇log p_σ(κ|γ) (DESIGN.md §1). `AnnealedHamiltonianMonteCarlo` runs HMC on
that target while a schedule lowers σ from step to step: many chains start
at large σ, take a few HMC steps per noise level, and the final states are
independent posterior samples.
"""

import collections
import math

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.mcmc import kernel as kernel_base
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_massmap import _checks

__all__ = [
    'AnnealedHamiltonianMonteCarlo',
    'AnnealedHamiltonianMonteCarloKernelResults',
    'MAX_STABLE_STEP_SIZE_FACTOR',
]

# Leapfrog is stable for ε·sqrt(curvature) < 2 and the annealed posterior's
# curvature is at most 2/σ², so ε = factor·σ is stable for factor < √2 (see
# the `AnnealedHamiltonianMonteCarlo` docstring); larger factors are refused.
MAX_STABLE_STEP_SIZE_FACTOR = math.sqrt(2.)

# The state is a batch of maps [..., N, N]: the last two axes are one map,
# the leading ones index independent chains.
_MAP_NDIMS = 2


class AnnealedHamiltonianMonteCarloKernelResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        'AnnealedHamiltonianMonteCarloKernelResults',
        [
            'step',                   # int32: transitions taken so far.
            'sigma',                  # Noise level of the last transition.
            'step_size',              # Leapfrog step of the last transition.
            'target_score',           # Score at the current state, ...
            'target_score_sigma',     # ... for this noise level.
            'proposed_state',
            'initial_momentum',
            'final_momentum',
            'is_accepted',            # [chains] bool.
            'log_accept_ratio',       # [chains].
            'num_accepted',           # [chains] int32, cumulative.
            'num_score_evaluations',  # int32, cumulative calls of the score.
            'energy_error',           # [chains], of the checked trajectory.
            'sum_accept_probability',  # [chains], cumulative.
            'max_abs_state',          # [chains], running max of |x|.
            'seed',                   # Seed received by one_step.
        ])):
  """State and diagnostics of `AnnealedHamiltonianMonteCarlo`.

  Fields (chains are the leading axes of the state ``[..., N, N]``):

  * ``step``: int32 scalar, the number of transitions taken so far; the next
    transition targets noise level ``schedule.sigma(step)``.
  * ``sigma``, ``step_size``: noise level and leapfrog step size of the last
    transition (of step 0 after `bootstrap_results`).
  * ``target_score``: the target score at the current state for noise level
    ``target_score_sigma``: the cache reused by the next transition when its
    noise level equals ``target_score_sigma`` (else recomputed).
  * ``proposed_state``: the end of the last leapfrog trajectory.
  * ``initial_momentum``, ``final_momentum``: momentum at the start and end
    of that trajectory (without ``metropolis_correction`` the last half
    kick is skipped, see the kernel docstring).
  * ``is_accepted``, ``log_accept_ratio``: the Metropolis decision and its
    estimated log ratio per chain (accepted, ratio 0 without correction).
  * ``num_accepted``: per chain, accepted transitions since bootstrap.
  * ``num_score_evaluations``: int32 scalar, calls of ``target_score_fn``
    since (and including) bootstrap; each call evaluates every chain.
  * ``energy_error``: per chain, the line-integral estimate of the change
    of the Hamiltonian ΔH = −log(Metropolis ratio) over the part of the last
    trajectory that ran at one noise level: all of it with
    ``metropolis_correction``, the first ``num_leapfrog_steps − 1`` leapfrog
    steps without (so 0 with one leapfrog step and no correction, where no
    part is checked); see the kernel docstring.
  * ``sum_accept_probability``: per chain, the sum since bootstrap of the
    Metropolis acceptance probability min(1, exp(−ΔH)) of each transition
    (0 where ΔH is NaN); divided by ``step`` it is the mean acceptance the
    Metropolis test would have (or has) applied, a measure of the leapfrog
    discretisation error that stays meaningful without correction.
  * ``max_abs_state``: per chain, the largest |x| of any pixel of any state
    since bootstrap (the initial state included), +inf once a state held a
    NaN or inf: a chain that ran away and came back still shows it.
  * ``seed``: the stateless seed ``one_step`` received.
  """
  __slots__ = ()


def _chain_shaped(x):
  """Reshapes a per-chain ``[...]`` tensor to broadcast against maps."""
  return tf.reshape(x, ps.concat([ps.shape(x), [1] * _MAP_NDIMS], axis=0))


def _squared_norm(x):
  """Per-chain squared Euclidean norm over the map axes."""
  return tf.reduce_sum(tf.square(x), axis=[-2, -1])


def _max_abs(x):
  """Per-chain max |x| over the map axes; +inf where x holds NaN or inf."""
  finite = tf.reduce_all(tf.math.is_finite(x), axis=[-2, -1])
  return tf.where(finite, tf.reduce_max(tf.abs(x), axis=[-2, -1]),
                  tf.constant(np.inf, x.dtype))


def _accept_probability(energy_error):
  """min(1, exp(−ΔH)), 0 where ΔH is NaN (a diverged trajectory)."""
  return tf.where(tf.math.is_nan(energy_error),
                  tf.zeros_like(energy_error),
                  tf.exp(-tf.maximum(energy_error, 0.)))


class AnnealedHamiltonianMonteCarlo(kernel_base.TransitionKernel):
  """HMC with a noise level that anneals, driven by a score function.

  Transition k targets the annealed posterior p_σ with σ = σ_k =
  ``schedule.sigma(k)``, known through its score
  ``target_score_fn(x, σ) = ∇_x log p_σ(x)``. It draws a unit-mass momentum
  p ~ N(0, I), runs ``num_leapfrog_steps`` leapfrog steps of size

    ε_k = step_size_factor · σ_k,

  and (optionally) accepts or rejects the end point.

  #### Step size

  The annealed posterior is steepest in the directions it is narrowest. Its
  prior part p_σ, a density convolved with N(0, σ²), has
  −∇²log p_σ = I/σ² − Cov[x₀ | x]/σ⁴ ⪯ I/σ² whatever the prior; the
  likelihood part, with the shear operator A (AᵀA ⪯ I) and noise variance
  N + σ² ⪰ σ², has −∇²log p_σ(γ|κ) ⪯ I/σ². So the curvature is at most
  c_max = 2/σ², and every direction has a standard deviation of at least
  σ/√2 (on a Fourier mode of the unmasked Gaussian problem the variance is
  exactly 1/(1/(S_k + σ²) + 1/(N_k + σ²)) ≥ σ²/2). One leapfrog step on a
  direction of curvature c is a linear map of (x, p) with determinant 1 and
  trace 2 − ε²c: its eigenvalues lie on the unit circle when ε√c < 2 (the
  energy error stays bounded), and one of them exceeds 1 in modulus when
  ε√c > 2 (the state grows exponentially with the steps). With
  ε = factor · σ the worst direction has ε√c_max = factor · √2, so leapfrog
  is stable in every direction for

    step_size_factor < √2 = `MAX_STABLE_STEP_SIZE_FACTOR`,

  and ε/std stays the same at every noise level; a Python float factor
  outside (0, √2) is refused (a tensor factor is not checked). 1 works well
  for an exact prior score. A trained network is not an exact smoothed
  prior: its Jacobian can exceed the bound, and with factor 1 the chains of
  the shipped prior run away at σ ≈ 0.01-0.03 while factor 0.5 keeps them on
  the prior (docs/benchmarks.md, "Annealing for the learned prior");
  `sample_posterior` uses 0.5. A chain that runs away anyway shows in
  ``max_abs_state`` (and in ``energy_error``). (A lower bound on the step
  from the posterior width, ε ≥ factor · τ_min, would help once σ ≪ τ_min,
  but the mean mode of the map has posterior width σ — the data do not
  constrain it, nor does a Gaussian prior with P(0) = 0 — so τ_min is 0 for
  mass maps; we do not offer one.)

  #### Metropolis correction

  The log-density is unavailable, so log p(x') − log p(x) is estimated by
  the line integral of the score along the leapfrog path, with the trapezoid
  rule on each position update x_{i+1} = x_i + ε p_{i+½}:

    Δ log p ≈ Σ_i ½ (g_i + g_{i+1}) · (x_{i+1} − x_i),   g_i = score(x_i).

  For a linear score (a Gaussian target) it is exact. Substituting the
  leapfrog updates, the estimate of the log acceptance ratio
  Δ log p − ½|p_L|² + ½|p_0|² telescopes to (ε²/8)(|g_0|² − |g_L|²), which is
  what is computed (same value, no cancellation of large terms). With
  ``metropolis_correction=True`` the kernel accepts with that probability;
  it is calibrated (leaves p_σ invariant) exactly for Gaussian targets, and
  up to the O(ε³) error of the trapezoid rule along each trajectory for
  others (and only if the score is a true gradient field), so
  `is_calibrated` is True. With ``metropolis_correction=False`` every
  proposal is accepted (`is_calibrated` False; the samples carry the
  leapfrog discretisation bias), the log ratio is not computed (reported 0),
  and the last half momentum kick, which only that ratio would use, is
  skipped: the score at the end of the trajectory is evaluated directly at
  the next step's noise level, saving one evaluation per noise level.

  #### Energy error without correction

  Without correction every proposal is accepted, so the acceptance rate says
  nothing. The kernel still reports the energy error ΔH of the first
  ``num_leapfrog_steps − 1`` leapfrog steps of each trajectory: these steps
  and their scores are at the transition's own noise level (the score at the
  start was evaluated there by the previous transition), so the same
  telescoped formula applies to them, (ε²/8)(|g_{L−1}|² − |g_0|²), with no
  extra score evaluation; only the last step, whose end score is taken at
  the next noise level, is not checked. ``sum_accept_probability`` adds up
  min(1, exp(−ΔH)), the acceptance probability a Metropolis test would
  have used: near 1 for an accurate integration, near 0 for a diverging one.

  #### Cost

  ``num_leapfrog_steps`` score evaluations per transition, plus one when
  the noise level differs from the cached score's (with correction: at each
  new noise level; without: never after the first transition), plus one in
  `bootstrap_results`. The diagnostics (energy error, acceptance
  probability, max |x|) reuse these scores and cost a few reductions over
  the state.

  #### Example

  ```python
  schedule = GeometricSchedule(sigma_max=0.1, sigma_min=1e-3, num_levels=40)
  kernel = AnnealedHamiltonianMonteCarlo(
      target_score_fn=posterior_score,   # (x [C, N, N], sigma) -> [C, N, N]
      schedule=schedule, step_size_factor=1., num_leapfrog_steps=5)
  final_state = tfp.mcmc.sample_chain(
      num_results=1, num_burnin_steps=schedule.num_steps - 1,
      current_state=0.1 * tf.random.stateless_normal([64, 128, 128], [1, 2]),
      kernel=kernel, trace_fn=None, seed=[3, 4])[-1]
  ```
  """

  def __init__(self,
               target_score_fn,
               schedule,
               step_size_factor,
               num_leapfrog_steps,
               metropolis_correction=False,
               name=None):
    """Initializes this transition kernel.

    Args:
      target_score_fn: Python callable ``(x, sigma) -> score``: for a state
        ``x`` ``[..., N, N]`` and a scalar float tensor ``sigma`` (the noise
        level, same dtype as ``x``) returns ∇_x log p_σ(x), same shape as
        ``x``.
      schedule: the noise-level schedule: an object with ``sigma(step)``
        (float scalar tensor for an integer tensor ``step``) and
        ``num_steps``, like `GeometricSchedule` or `ConstantSchedule`.
      step_size_factor: float in (0, √2); the leapfrog step size is
        ``step_size_factor * sigma`` (dimensionless; leapfrog is unstable
        on the annealed posterior from √2 = `MAX_STABLE_STEP_SIZE_FACTOR`
        on, see the class docstring; 1 is a good value for an exact prior
        score). A tensor is used as given, unchecked.
      num_leapfrog_steps: Python int >= 1, leapfrog steps per transition.
      metropolis_correction: Python bool; accept or reject each proposal
        with the line-integral estimate of the Metropolis ratio (True), or
        accept always (False).
      name: Python `str` name prefixed to the ops this kernel creates.
        Default: 'annealed_hmc'.

    Raises:
      ValueError: if an argument is out of range.
    """
    if not callable(target_score_fn):
      raise ValueError('target_score_fn must be a callable (x, sigma) -> '
                       f'score, got {target_score_fn!r}.')
    if not (callable(getattr(schedule, 'sigma', None)) and
            hasattr(schedule, 'num_steps')):
      raise ValueError('schedule must have a sigma(step) method and a '
                       f'num_steps attribute, got {schedule!r}.')
    if not tf.is_tensor(step_size_factor):
      factor = _checks.positive_scalar(step_size_factor, 'step_size_factor')
      if factor >= MAX_STABLE_STEP_SIZE_FACTOR:
        raise ValueError(
            f'step_size_factor must be in (0, √2 ≈ '
            f'{MAX_STABLE_STEP_SIZE_FACTOR:.4f}), where leapfrog is stable on '
            f'the annealed posterior (curvature <= 2/sigma²), got '
            f'{step_size_factor!r}.')
    _checks.positive_int(num_leapfrog_steps, 'num_leapfrog_steps')
    if not isinstance(metropolis_correction, bool):
      raise ValueError('metropolis_correction must be a Python bool, got '
                       f'{metropolis_correction!r}.')
    self._parameters = dict(
        target_score_fn=target_score_fn,
        schedule=schedule,
        step_size_factor=step_size_factor,
        num_leapfrog_steps=num_leapfrog_steps,
        metropolis_correction=metropolis_correction,
        name=name)

  @property
  def target_score_fn(self):
    return self._parameters['target_score_fn']

  @property
  def schedule(self):
    return self._parameters['schedule']

  @property
  def step_size_factor(self):
    return self._parameters['step_size_factor']

  @property
  def num_leapfrog_steps(self):
    return self._parameters['num_leapfrog_steps']

  @property
  def metropolis_correction(self):
    return self._parameters['metropolis_correction']

  @property
  def name(self):
    return self._parameters['name']

  @property
  def parameters(self):
    """Return `dict` of ``__init__`` arguments and their values."""
    return self._parameters

  @property
  def is_calibrated(self):
    return self.metropolis_correction

  def _sigma(self, step, dtype):
    return tf.cast(self.schedule.sigma(step), dtype)

  def _step_size(self, sigma):
    factor = self.step_size_factor
    if tf.is_tensor(factor):
      factor = tf.cast(factor, sigma.dtype)
    else:  # tf.cast of a Python float to float64 would round it to float32.
      factor = tf.constant(factor, sigma.dtype)
    return factor * sigma

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Runs one annealed HMC transition.

    Args:
      current_state: float tensor ``[..., N, N]``, the chains' states.
      previous_kernel_results: `AnnealedHamiltonianMonteCarloKernelResults`
        from `bootstrap_results` or the previous `one_step`.
      seed: PRNG seed; see `tfp.random.sanitize_seed` for details.

    Returns:
      next_state: tensor like ``current_state``.
      kernel_results: the updated
        `AnnealedHamiltonianMonteCarloKernelResults`.
    """
    with tf.name_scope(
        mcmc_util.make_name(self.name, 'annealed_hmc', 'one_step')):
      pkr = previous_kernel_results
      x0 = tf.convert_to_tensor(current_state, name='current_state')
      dtype = dtype_util.base_dtype(x0.dtype)
      sigma = self._sigma(pkr.step, dtype)
      num_evals = pkr.num_score_evaluations
      chain_shape = ps.shape(x0)[:-_MAP_NDIMS]

      # The target changes with σ: the cached score is reused only if it was
      # computed for this very noise level.
      g0, num_evals = tf.cond(
          tf.equal(sigma, pkr.target_score_sigma),
          lambda: (pkr.target_score, num_evals),
          lambda: (self.target_score_fn(x0, sigma), num_evals + 1))

      seed = samplers.sanitize_seed(seed)  # Retain for diagnostics.
      momentum_seed, accept_seed = samplers.split_seed(seed)
      p0 = samplers.normal(ps.shape(x0), dtype=dtype, seed=momentum_seed)
      step_size = self._step_size(sigma)

      # Leapfrog: a half kick, then (drift, full kick) L − 1 times, then a
      # last drift and the score at the end point.
      def leapfrog_body(x, p, g):
        del g
        x = x + step_size * p
        g = self.target_score_fn(x, sigma)
        return x, p + step_size * g, g

      p = p0 + 0.5 * step_size * g0
      x, p, g = tf.while_loop(
          cond=lambda *_: tf.constant(True),
          body=leapfrog_body,
          loop_vars=(x0, p, g0),
          maximum_iterations=self.num_leapfrog_steps - 1)
      x1 = x + step_size * p
      end_sigma = (sigma if self.metropolis_correction
                   else self._sigma(pkr.step + 1, dtype))
      g1 = self.target_score_fn(x1, end_sigma)
      num_evals = num_evals + self.num_leapfrog_steps

      if self.metropolis_correction:
        p1 = p + 0.5 * step_size * g1
        log_accept_ratio = (tf.square(step_size) / 8.) * (
            _squared_norm(g0) - _squared_norm(g1))
        energy_error = -log_accept_ratio
        log_uniform = tf.math.log(samplers.uniform(
            chain_shape, dtype=dtype, seed=accept_seed))
        is_accepted = log_uniform < log_accept_ratio
        keep = _chain_shaped(is_accepted)
        next_state = tf.where(keep, x1, x0)
        next_score = tf.where(keep, g1, g0)
      else:
        p1 = p
        log_accept_ratio = tf.zeros(chain_shape, dtype)
        # The first L − 1 leapfrog steps end at g = score(x_{L−1}, σ).
        energy_error = (tf.square(step_size) / 8.) * (
            _squared_norm(g) - _squared_norm(g0))
        is_accepted = tf.ones(chain_shape, tf.bool)
        next_state, next_score = x1, g1

      kernel_results = AnnealedHamiltonianMonteCarloKernelResults(
          step=pkr.step + 1,
          sigma=sigma,
          step_size=step_size,
          target_score=next_score,
          target_score_sigma=end_sigma,
          proposed_state=x1,
          initial_momentum=p0,
          final_momentum=p1,
          is_accepted=is_accepted,
          log_accept_ratio=log_accept_ratio,
          num_accepted=pkr.num_accepted + tf.cast(is_accepted, tf.int32),
          num_score_evaluations=num_evals,
          energy_error=energy_error,
          sum_accept_probability=(pkr.sum_accept_probability +
                                  _accept_probability(energy_error)),
          max_abs_state=tf.maximum(pkr.max_abs_state, _max_abs(next_state)),
          seed=seed)
      return next_state, kernel_results

  def bootstrap_results(self, init_state):
    """Creates the initial kernel results: the score at step 0's noise level.

    Args:
      init_state: float tensor ``[..., N, N]``, the chains' initial states.

    Returns:
      kernel_results: an `AnnealedHamiltonianMonteCarloKernelResults`.
    """
    with tf.name_scope(
        mcmc_util.make_name(self.name, 'annealed_hmc', 'bootstrap_results')):
      x = tf.convert_to_tensor(init_state, name='init_state')
      _checks.float_dtype(x.dtype, 'init_state dtype')
      if x.shape.rank is not None and x.shape.rank < _MAP_NDIMS:
        raise ValueError('init_state must have shape [..., N, N], got shape '
                         f'{x.shape}.')
      dtype = dtype_util.base_dtype(x.dtype)
      step = tf.zeros([], tf.int32)
      sigma = self._sigma(step, dtype)
      chain_shape = ps.shape(x)[:-_MAP_NDIMS]
      return AnnealedHamiltonianMonteCarloKernelResults(
          step=step,
          sigma=sigma,
          step_size=self._step_size(sigma),
          target_score=self.target_score_fn(x, sigma),
          target_score_sigma=sigma,
          proposed_state=x,
          initial_momentum=tf.zeros_like(x),
          final_momentum=tf.zeros_like(x),
          is_accepted=tf.ones(chain_shape, tf.bool),
          log_accept_ratio=tf.zeros(chain_shape, dtype),
          num_accepted=tf.zeros(chain_shape, tf.int32),
          num_score_evaluations=tf.ones([], tf.int32),
          energy_error=tf.zeros(chain_shape, dtype),
          sum_accept_probability=tf.zeros(chain_shape, dtype),
          max_abs_state=_max_abs(x),
          seed=samplers.zeros_seed())

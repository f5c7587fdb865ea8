"""Hamiltonian Monte Carlo on a target known only through its score.

The prior of a mass map is known only through a score s_σ(x) = ∇log p_σ(x)
of the prior convolved with N(0, σ²) (a trained denoiser, or the analytic
Gaussian prior), so the annealed posterior is known only through its score
∇log p_σ(κ|γ) (docs/design.md §1). `AnnealedHamiltonianMonteCarlo` runs HMC on
that target while a schedule lowers σ from step to step: many chains start
at large σ, take a few HMC steps per noise level, and the final states are
independent posterior samples.
"""

import collections
import functools
import math

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import unnest
from tensorflow_probability.python.mcmc import kernel as kernel_base
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_massmap import _checks

__all__ = [
    'AnnealedHamiltonianMonteCarlo',
    'AnnealedHamiltonianMonteCarloKernelResults',
    'MAX_STABLE_STEP_SIZE_FACTOR',
    'log_accept_prob_getter_fn',
]

# Leapfrog is stable for ε·sqrt(curvature) < 2 and the annealed posterior's
# curvature is at most 2/σ², so ε = factor·σ is stable for factor < √2 (see
# the `AnnealedHamiltonianMonteCarlo` docstring); larger factors are refused.
MAX_STABLE_STEP_SIZE_FACTOR = math.sqrt(2.)

# The state is a batch of maps [..., N, N] (or a list of parts, the first of
# them such a batch): the last two axes of the first part are one map, the
# leading ones index independent chains.
_MAP_NDIMS = 2


class AnnealedHamiltonianMonteCarloKernelResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        'AnnealedHamiltonianMonteCarloKernelResults',
        [
            'step',                   # int32: transitions taken so far.
            'sigma',                  # Noise level of the last transition.
            'step_size',              # Step factor ε/σ of the next transition.
            'leapfrog_step_size',     # Leapfrog step ε of the last transition.
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

  Fields (chains are the leading axes of the state ``[..., N, N]``; with a
  list of state parts, the state-shaped fields are lists of the same
  length):

  * ``step``: int32 scalar, the number of transitions taken so far; the next
    transition targets noise level ``schedule.sigma(step)``.
  * ``sigma``: noise level of the last transition (of step 0 after
    `bootstrap_results`).
  * ``step_size``: the step-size factor ε/σ (dimensionless) the next
    transition uses: its leapfrog step is ``step_size * sigma`` at its own
    noise level. A tensor broadcasting against the state (a scalar, or
    ``[..., 1, 1]`` for one factor per chain), or a list of them, one per
    state part. Starts at ``step_size_factor``; changed only by the
    kernel's own adaptation (``target_accept_prob``) or by a TFP step-size
    adaptation kernel wrapping this one, which read and set this field.
  * ``leapfrog_step_size``: the leapfrog step ε = factor · σ of the last
    transition (of step 0 after `bootstrap_results`), same structure as
    ``step_size``; dimensionless like the state.
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
    (of any part) since bootstrap (the initial state included), +inf once a
    state held a NaN or inf: a chain that ran away and came back still
    shows it.
  * ``seed``: the stateless seed ``one_step`` received.
  """
  __slots__ = ()


def log_accept_prob_getter_fn(kernel_results):
  """Log of the (would-be) acceptance probability, for step-size adaptation.

  Returns min(0, −ΔH) per chain from the innermost ``energy_error`` of
  ``kernel_results`` (−inf where ΔH is NaN). With ``metropolis_correction``
  it equals TFP's default getter (min(0, ``log_accept_ratio``)); without,
  where ``log_accept_ratio`` is 0 by construction, it is the acceptance a
  Metropolis test would have applied to the first ``num_leapfrog_steps − 1``
  leapfrog steps. Pass it as ``log_accept_prob_getter_fn`` to
  `tfp.mcmc.SimpleStepSizeAdaptation` or
  `tfp.mcmc.DualAveragingStepSizeAdaptation` wrapping an uncorrected
  `AnnealedHamiltonianMonteCarlo` (with two or more leapfrog steps).

  Args:
    kernel_results: results of `AnnealedHamiltonianMonteCarlo`, or of kernels
      wrapping it.

  Returns:
    log_accept_prob: float tensor of the chain shape.
  """
  energy_error = unnest.get_innermost(kernel_results, 'energy_error')
  return tf.where(tf.math.is_nan(energy_error),
                  tf.constant(-np.inf, energy_error.dtype),
                  tf.minimum(-energy_error, 0.))


def _constant(value, dtype):
  """A Python number or a tensor as a tensor of ``dtype``."""
  if tf.is_tensor(value):
    return tf.cast(value, dtype)
  # tf.cast of a Python float to float64 would round it to float32 first.
  return tf.constant(value, dtype)


def _event_axes(x, chain_ndims):
  """The axes of a state part after its leading chain axes."""
  return ps.range(chain_ndims, ps.rank(x))


def _chain_sum(parts, chain_ndims):
  """Per-chain sum over the event axes of every part."""
  return tf.add_n([tf.reduce_sum(x, axis=_event_axes(x, chain_ndims))
                   for x in parts])


def _max_abs(parts, chain_ndims):
  """Per-chain max |x| over the parts; +inf where a part holds NaN or inf."""
  maxima = []
  for x in parts:
    axes = _event_axes(x, chain_ndims)
    finite = tf.reduce_all(tf.math.is_finite(x), axis=axes)
    maxima.append(tf.where(finite, tf.reduce_max(tf.abs(x), axis=axes),
                           tf.constant(np.inf, x.dtype)))
  return functools.reduce(tf.maximum, maxima)


def _accept_probability(energy_error):
  """min(1, exp(−ΔH)), 0 where ΔH is NaN (a diverged trajectory)."""
  return tf.where(tf.math.is_nan(energy_error),
                  tf.zeros_like(energy_error),
                  tf.exp(-tf.maximum(energy_error, 0.)))


def _state_parts(state, name):
  """(list of tensors, whether ``state`` was a list) for a state structure."""
  is_list = mcmc_util.is_list_like(state)
  parts = [tf.convert_to_tensor(x, name=name)
           for x in (state if is_list else [state])]
  if not parts:
    raise ValueError(f'{name} must be a tensor [..., N, N] or a non-empty list '
                     'of tensors, got an empty list.')
  return parts, is_list


def _check_state_parts(parts, name):
  """Checks dtypes (one float dtype) and the shared leading chain axes."""
  dtype = _checks.float_dtype(parts[0].dtype, f'{name} dtype')
  first = parts[0].shape
  if first.rank is not None and first.rank < _MAP_NDIMS:
    raise ValueError(f'{name} must have shape [..., N, N] (its first part, for '
                     f'a list), got shape {first}.')
  for i, x in enumerate(parts[1:], start=1):
    if x.dtype != dtype:
      raise ValueError(f'every part of {name} must have the dtype of part 0, '
                       f'{dtype.name}; part {i} has {x.dtype.name}.')
    if first.rank is None or x.shape.rank is None:
      continue
    chain = first[:first.rank - _MAP_NDIMS]
    if x.shape.rank < chain.rank or not x.shape[:chain.rank].is_compatible_with(
        chain):
      raise ValueError(
          f'every part of {name} must start with the chain axes {chain} of '
          f'part 0 (its shape but the last two axes); part {i} has shape '
          f'{x.shape}.')


def _check_factor(factor):
  """Checks a Python step-size factor lies in (0, √2)."""
  value = _checks.positive_scalar(factor, 'step_size_factor')
  if value >= MAX_STABLE_STEP_SIZE_FACTOR:
    raise ValueError(
        f'step_size_factor must be in (0, √2 ≈ '
        f'{MAX_STABLE_STEP_SIZE_FACTOR:.4f}), where leapfrog is stable on '
        f'the annealed posterior (curvature <= 2/sigma²), got {factor!r}.')


class AnnealedHamiltonianMonteCarlo(kernel_base.TransitionKernel):
  """HMC with a noise level that anneals, driven by a score function.

  Transition k targets the annealed posterior p_σ with σ = σ_k =
  ``schedule.sigma(k)``, known through its score
  ``target_score_fn(x, σ) = ∇_x log p_σ(x)``. It draws a unit-mass momentum
  p ~ N(0, I), runs ``num_leapfrog_steps`` leapfrog steps of size

    ε_k = f · σ_k,

  where the factor f is the ``step_size`` of the kernel results (initially
  ``step_size_factor``), and (optionally) accepts or rejects the end point.

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

  #### Step-size adaptation

  Stability is not acceptance: the energy error of a trajectory adds up over
  the directions near the largest curvature, so at a fixed factor the
  Metropolis acceptance falls with the number of pixels and changes with σ
  (on the 32² Gaussian test problem, 3 leapfrog steps at factor 0.5 accept
  about 64 % of the proposals at σ = 0.01 and 98 % at σ = 0.001; adapted to
  65 %, the factor reaches about 1.2 at σ = 0.01, accepting 67-69 %, and the
  √2 cap at σ = 0.001, accepting 79 %). The factor lives in the kernel
  results (``step_size``), so it can be adapted in two ways (use one, not
  both):

  * ``target_accept_prob=a*``: after each transition the kernel updates the
    factor of the next one from the mean over all chains of the acceptance
    probability ā = mean min(1, exp(−ΔH)) of this one,

      log f ← min(log f + ``adaptation_rate`` · (ā − a*), log √2),

    so the factor follows the noise levels of the schedule (each level
    starts from the factor the previous ones reached) and stays where
    leapfrog is stable. While σ falls the chains contract, which makes the
    energy error of a trajectory negative and the acceptance high, so the
    factor grows during the annealing (often to √2) and shrinks where the
    acceptance falls. Without
    ``metropolis_correction`` ā is the would-be acceptance of the first
    ``num_leapfrog_steps − 1`` leapfrog steps (see below), so two or more
    leapfrog steps are needed. The factor then depends on the chains' past
    (all chains share it): the final states are a valid sample of an
    adaptive annealing, not of a fixed Markov kernel; for a fixed kernel
    at the end, adapt during the annealing only (e.g. run a copy of the
    kernel without ``target_accept_prob``, started from the adapted
    ``step_size``, for the last level).
  * TFP's `tfp.mcmc.SimpleStepSizeAdaptation` and
    `tfp.mcmc.DualAveragingStepSizeAdaptation` read and set ``step_size``
    (their default getter and setter find it, and with
    ``metropolis_correction`` the default acceptance getter reads
    ``log_accept_ratio``), so they act on the factor, on a scale that does
    not change with σ. Without correction ``log_accept_ratio`` is 0 (every
    proposal is accepted) and the wrappers would only grow the step: pass
    ``log_accept_prob_getter_fn=annealed_hmc.log_accept_prob_getter_fn``
    (the would-be acceptance), and prefer `SimpleStepSizeAdaptation`: dual
    averaging tries steps up to 10 times the initial one, and an
    uncorrected kernel cannot reject the trajectories that explode.
    Per-chain factors (``step_size_factor`` of
    shape ``[..., 1, 1]``) work as for `tfp.mcmc.HamiltonianMonteCarlo`.

  #### Metropolis correction

  The log-density is unavailable, so log p(x') − log p(x) is estimated by
  the line integral of the score along the leapfrog path, with the trapezoid
  rule on each position update x_{i+1} = x_i + ε p_{i+½}:

    Δ log p ≈ Σ_i ½ (g_i + g_{i+1}) · (x_{i+1} − x_i),   g_i = score(x_i).

  For a linear score (a Gaussian target) it is exact. Substituting the
  leapfrog updates, the estimate of the log acceptance ratio
  Δ log p − ½|p_L|² + ½|p_0|² telescopes to (1/8)(|ε g_0|² − |ε g_L|²)
  (coordinate by coordinate, so a step that differs between chains, parts
  or pixels is allowed), which is what is computed (same value, no
  cancellation of large terms). With ``metropolis_correction=True`` the
  kernel accepts with that probability; it is calibrated (leaves p_σ
  invariant) exactly for Gaussian targets, and up to the O(ε³) error of the
  trapezoid rule along each trajectory for others (and only if the score is
  a true gradient field), so `is_calibrated` is True. With
  ``metropolis_correction=False`` every proposal is accepted
  (`is_calibrated` False; the samples carry the leapfrog discretisation
  bias), the log ratio is not computed (reported 0), and the last half
  momentum kick, which only that ratio would use, is skipped: the score at
  the end of the trajectory is evaluated directly at the next step's noise
  level, saving one evaluation per noise level.

  #### Energy error without correction

  Without correction every proposal is accepted, so the acceptance rate says
  nothing. The kernel still reports the energy error ΔH of the first
  ``num_leapfrog_steps − 1`` leapfrog steps of each trajectory: these steps
  and their scores are at the transition's own noise level (the score at the
  start was evaluated there by the previous transition), so the same
  telescoped formula applies to them, (1/8)(|ε g_{L−1}|² − |ε g_0|²), with
  no extra score evaluation; only the last step, whose end score is taken
  at the next noise level, is not checked. ``sum_accept_probability`` adds
  up min(1, exp(−ΔH)), the acceptance probability a Metropolis test would
  have used: near 1 for an accurate integration, near 0 for a diverging one.

  #### State parts

  Like `tfp.mcmc.HamiltonianMonteCarlo` the state may be a list of tensors
  (parts): then ``target_score_fn`` receives the list and returns a list of
  the same length, each score of its part's shape and dtype. The first
  part is a batch of maps ``[..., N, N]``, whose leading axes index the
  chains; every other part starts with the same chain axes, followed by any
  event axes. One momentum per part, one Metropolis decision per chain
  for all parts.

  #### Cost

  ``num_leapfrog_steps`` score evaluations per transition, plus one when
  the noise level differs from the cached score's (with correction: at each
  new noise level; without: never after the first transition), plus one in
  `bootstrap_results`. The diagnostics (energy error, acceptance
  probability, max |x|) and the adaptation reuse these scores and cost a
  few reductions over the state.

  #### Examples

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

  With Metropolis correction, the factor adapted to 65 % acceptance at
  every noise level:

  ```python
  kernel = AnnealedHamiltonianMonteCarlo(
      target_score_fn=posterior_score, schedule=schedule,
      step_size_factor=0.5, num_leapfrog_steps=3,
      metropolis_correction=True, target_accept_prob=0.65)
  ```
  """

  def __init__(self,
               target_score_fn,
               schedule,
               step_size_factor,
               num_leapfrog_steps,
               metropolis_correction=False,
               target_accept_prob=None,
               adaptation_rate=1.,
               name=None):
    """Initializes this transition kernel.

    Args:
      target_score_fn: Python callable ``(x, sigma) -> score``: for a state
        ``x`` ``[..., N, N]`` (or a list of state parts) and a scalar float
        tensor ``sigma`` (the noise level, same dtype as ``x``) returns
        ∇_x log p_σ(x), same shape as ``x`` (a list of the parts' scores).
      schedule: the noise-level schedule: an object with ``sigma(step)``
        (float scalar tensor for an integer tensor ``step``) and
        ``num_steps``, like `GeometricSchedule` or `ConstantSchedule`.
      step_size_factor: the initial step-size factor f; the leapfrog step
        is ``f * sigma`` (dimensionless). A Python float must lie in
        (0, √2): leapfrog is unstable on the annealed posterior from
        √2 = `MAX_STABLE_STEP_SIZE_FACTOR` on (see the class docstring;
        1 is a good value for an exact prior score). A float tensor
        broadcasting against the state (e.g. ``[..., 1, 1]``: one factor per
        chain) is used as given, unchecked. For a list of state parts, one
        factor for all or a list of one per part.
      num_leapfrog_steps: leapfrog steps per transition: a Python int >= 1,
        or an integer scalar tensor (unchecked).
      metropolis_correction: Python bool; accept or reject each proposal
        with the line-integral estimate of the Metropolis ratio (True), or
        accept always (False).
      target_accept_prob: None (the factor changes only if a wrapper sets
        it), or the mean acceptance probability in (0, 1) the kernel
        adapts the factor to, transition by transition (see "Step-size
        adaptation"); without ``metropolis_correction`` it needs
        ``num_leapfrog_steps`` >= 2.
      adaptation_rate: positive float, the gain of the update of log f
        (used with ``target_accept_prob``); 1 corrects most of an
        acceptance error within a transition or two.
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
    for factor in (step_size_factor if mcmc_util.is_list_like(step_size_factor)
                   else [step_size_factor]):
      if not tf.is_tensor(factor):
        _check_factor(factor)
    if tf.is_tensor(num_leapfrog_steps):
      if not dtype_util.is_integer(num_leapfrog_steps.dtype):
        raise ValueError('num_leapfrog_steps must be an integer, got a tensor '
                         f'of dtype {num_leapfrog_steps.dtype.name}.')
    else:
      _checks.positive_int(num_leapfrog_steps, 'num_leapfrog_steps')
    if not isinstance(metropolis_correction, bool):
      raise ValueError('metropolis_correction must be a Python bool, got '
                       f'{metropolis_correction!r}.')
    if target_accept_prob is not None and not tf.is_tensor(target_accept_prob):
      value = _checks.positive_scalar(target_accept_prob, 'target_accept_prob')
      if value >= 1.:
        raise ValueError('target_accept_prob must be in (0, 1), got '
                         f'{target_accept_prob!r}.')
      if (not metropolis_correction and not tf.is_tensor(num_leapfrog_steps)
          and num_leapfrog_steps == 1):
        raise ValueError(
            'target_accept_prob needs metropolis_correction=True or '
            'num_leapfrog_steps >= 2: without correction the energy error of '
            'the first num_leapfrog_steps - 1 leapfrog steps measures the '
            'acceptance, and with 1 step there is none; got '
            'num_leapfrog_steps=1.')
    if not tf.is_tensor(adaptation_rate):
      _checks.positive_scalar(adaptation_rate, 'adaptation_rate')
    self._parameters = dict(
        target_score_fn=target_score_fn,
        schedule=schedule,
        step_size_factor=step_size_factor,
        num_leapfrog_steps=num_leapfrog_steps,
        metropolis_correction=metropolis_correction,
        target_accept_prob=target_accept_prob,
        adaptation_rate=adaptation_rate,
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
  def target_accept_prob(self):
    return self._parameters['target_accept_prob']

  @property
  def adaptation_rate(self):
    return self._parameters['adaptation_rate']

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

  def _score(self, parts, sigma, is_list):
    """``target_score_fn`` on the state's structure, as a list of parts."""
    score = self.target_score_fn(parts if is_list else parts[0], sigma)
    returned_list = mcmc_util.is_list_like(score)
    score_parts = list(score) if returned_list else [score]
    if returned_list != is_list or len(score_parts) != len(parts):
      wanted = f'a list of {len(parts)} tensors' if is_list else 'one tensor'
      if returned_list:
        got = f'a list of {len(score_parts)}'
      else:
        got = 'a tensor' if tf.is_tensor(score) else type(score).__name__
      raise ValueError('target_score_fn must return a score of the structure '
                       f'of the state, {wanted}; got {got}.')
    checked = []
    for i, (x, g) in enumerate(zip(parts, score_parts)):
      g = tf.convert_to_tensor(g)
      if g.dtype != x.dtype or not g.shape.is_compatible_with(x.shape):
        raise ValueError(
            'target_score_fn must return, for each state part, a score of its '
            f'shape and dtype: part {i} has shape {x.shape} and dtype '
            f'{x.dtype.name}, its score shape {g.shape} and dtype '
            f'{g.dtype.name}.')
      checked.append(g)
    return checked

  def _initial_step_size(self, num_parts, dtype):
    """``step_size_factor`` as a tensor (or a list per part) of ``dtype``."""
    factor = self.step_size_factor
    if not mcmc_util.is_list_like(factor):
      return _constant(factor, dtype)
    if len(factor) != num_parts:
      raise ValueError(
          f'step_size_factor must be one factor or a list of one per state '
          f'part ({num_parts}), got a list of {len(factor)}.')
    return [_constant(f, dtype) for f in factor]

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Runs one annealed HMC transition.

    Args:
      current_state: float tensor ``[..., N, N]``, the chains' states, or a
        list of state parts (see the class docstring).
      previous_kernel_results: `AnnealedHamiltonianMonteCarloKernelResults`
        from `bootstrap_results` or the previous `one_step`.
      seed: PRNG seed; see `tfp.random.sanitize_seed` for details.

    Returns:
      next_state: tensor (or list) like ``current_state``.
      kernel_results: the updated
        `AnnealedHamiltonianMonteCarloKernelResults`.

    Raises:
      ValueError: if the step size in ``previous_kernel_results`` is a list
        whose length is not the number of state parts.
    """
    with tf.name_scope(
        mcmc_util.make_name(self.name, 'annealed_hmc', 'one_step')):
      pkr = previous_kernel_results
      x0, is_list = _state_parts(current_state, 'current_state')
      dtype = dtype_util.base_dtype(x0[0].dtype)
      chain_ndims = ps.rank(x0[0]) - _MAP_NDIMS
      chain_shape = ps.shape(x0[0])[:-_MAP_NDIMS]
      sigma = self._sigma(pkr.step, dtype)
      num_evals = pkr.num_score_evaluations

      def pack(parts):
        return parts if is_list else parts[0]

      # The target changes with σ: the cached score is reused only if it was
      # computed for this very noise level.
      g0, num_evals = tf.cond(
          tf.equal(sigma, pkr.target_score_sigma),
          lambda: (list(pkr.target_score) if is_list else [pkr.target_score],
                   num_evals),
          lambda: (self._score(x0, sigma, is_list), num_evals + 1))

      seed = samplers.sanitize_seed(seed)  # Retain for diagnostics.
      momentum_seed, accept_seed = samplers.split_seed(seed)
      # One part keeps the momentum seed itself (the stream of a one-tensor
      # state does not depend on this code's support for parts).
      momentum_seeds = (samplers.split_seed(momentum_seed, n=len(x0))
                        if len(x0) > 1 else [momentum_seed])
      p0 = [samplers.normal(ps.shape(x), dtype=dtype, seed=s)
            for x, s in zip(x0, momentum_seeds)]
      factors = (list(pkr.step_size) if mcmc_util.is_list_like(pkr.step_size)
                 else [pkr.step_size])
      if len(factors) == 1:
        factors = factors * len(x0)
      elif len(factors) != len(x0):
        raise ValueError(
            f'the step_size of the kernel results must be one factor or a '
            f'list of one per state part ({len(x0)}), got a list of '
            f'{len(factors)}.')
      eps = [f * sigma for f in factors]

      def scaled_squared_norm(g):  # Per chain Σ |ε g|² over the parts.
        return _chain_sum([tf.square(e * gi) for e, gi in zip(eps, g)],
                          chain_ndims)

      # Leapfrog: a half kick, then (drift, full kick) L − 1 times, then a
      # last drift and the score at the end point.
      def leapfrog_body(x, p, g):
        del g
        x = [xi + e * pi for xi, e, pi in zip(x, eps, p)]
        g = self._score(x, sigma, is_list)
        return x, [pi + e * gi for pi, e, gi in zip(p, eps, g)], g

      p = [pi + 0.5 * e * gi for pi, e, gi in zip(p0, eps, g0)]
      x, p, g = tf.while_loop(
          cond=lambda *_: tf.constant(True),
          body=leapfrog_body,
          loop_vars=(x0, p, g0),
          maximum_iterations=self.num_leapfrog_steps - 1)
      x1 = [xi + e * pi for xi, e, pi in zip(x, eps, p)]
      end_sigma = (sigma if self.metropolis_correction
                   else self._sigma(pkr.step + 1, dtype))
      g1 = self._score(x1, end_sigma, is_list)
      num_evals = num_evals + tf.cast(self.num_leapfrog_steps, tf.int32)

      if self.metropolis_correction:
        p1 = [pi + 0.5 * e * gi for pi, e, gi in zip(p, eps, g1)]
        log_accept_ratio = (scaled_squared_norm(g0) -
                            scaled_squared_norm(g1)) / 8.
        energy_error = -log_accept_ratio
        log_uniform = tf.math.log(samplers.uniform(
            chain_shape, dtype=dtype, seed=accept_seed))
        is_accepted = log_uniform < log_accept_ratio
        next_state = mcmc_util.choose(is_accepted, x1, x0)
        next_score = mcmc_util.choose(is_accepted, g1, g0)
      else:
        p1 = p
        log_accept_ratio = tf.zeros(chain_shape, dtype)
        # The first L − 1 leapfrog steps end at g = score(x_{L−1}, σ).
        energy_error = (scaled_squared_norm(g) - scaled_squared_norm(g0)) / 8.
        is_accepted = tf.ones(chain_shape, tf.bool)
        next_state, next_score = x1, g1

      accept_probability = _accept_probability(energy_error)
      next_step_size = pkr.step_size
      if self.target_accept_prob is not None:
        change = tf.exp(_constant(self.adaptation_rate, dtype) * (
            tf.reduce_mean(accept_probability) -
            _constant(self.target_accept_prob, dtype)))
        ceiling = _constant(MAX_STABLE_STEP_SIZE_FACTOR, dtype)
        next_step_size = tf.nest.map_structure(
            lambda f: tf.minimum(f * change, ceiling), pkr.step_size)

      kernel_results = AnnealedHamiltonianMonteCarloKernelResults(
          step=pkr.step + 1,
          sigma=sigma,
          step_size=next_step_size,
          leapfrog_step_size=tf.nest.map_structure(lambda f: f * sigma,
                                                   pkr.step_size),
          target_score=pack(next_score),
          target_score_sigma=end_sigma,
          proposed_state=pack(x1),
          initial_momentum=pack(p0),
          final_momentum=pack(p1),
          is_accepted=is_accepted,
          log_accept_ratio=log_accept_ratio,
          num_accepted=pkr.num_accepted + tf.cast(is_accepted, tf.int32),
          num_score_evaluations=num_evals,
          energy_error=energy_error,
          sum_accept_probability=(pkr.sum_accept_probability +
                                  accept_probability),
          max_abs_state=tf.maximum(pkr.max_abs_state,
                                   _max_abs(next_state, chain_ndims)),
          seed=seed)
      return pack(next_state), kernel_results

  def bootstrap_results(self, init_state):
    """Creates the initial kernel results: the score at step 0's noise level.

    Args:
      init_state: float tensor ``[..., N, N]``, the chains' initial states,
        or a list of state parts (see the class docstring).

    Returns:
      kernel_results: an `AnnealedHamiltonianMonteCarloKernelResults`.

    Raises:
      ValueError: if the state has a bad shape or dtype, if
        ``target_score_fn`` returns scores of another structure, shape or
        dtype, or if a list ``step_size_factor`` does not have one factor
        per state part.
    """
    with tf.name_scope(
        mcmc_util.make_name(self.name, 'annealed_hmc', 'bootstrap_results')):
      x, is_list = _state_parts(init_state, 'init_state')
      _check_state_parts(x, 'init_state')
      dtype = dtype_util.base_dtype(x[0].dtype)
      chain_ndims = ps.rank(x[0]) - _MAP_NDIMS
      chain_shape = ps.shape(x[0])[:-_MAP_NDIMS]
      step = tf.zeros([], tf.int32)
      sigma = self._sigma(step, dtype)
      step_size = self._initial_step_size(len(x), dtype)
      score = self._score(x, sigma, is_list)

      def zeros(parts):
        parts = [tf.zeros_like(part) for part in parts]
        return parts if is_list else parts[0]

      return AnnealedHamiltonianMonteCarloKernelResults(
          step=step,
          sigma=sigma,
          step_size=step_size,
          leapfrog_step_size=tf.nest.map_structure(lambda f: f * sigma,
                                                   step_size),
          target_score=score if is_list else score[0],
          target_score_sigma=sigma,
          proposed_state=x if is_list else x[0],
          initial_momentum=zeros(x),
          final_momentum=zeros(x),
          is_accepted=tf.ones(chain_shape, tf.bool),
          log_accept_ratio=tf.zeros(chain_shape, dtype),
          num_accepted=tf.zeros(chain_shape, tf.int32),
          num_score_evaluations=tf.ones([], tf.int32),
          energy_error=tf.zeros(chain_shape, dtype),
          sum_accept_probability=tf.zeros(chain_shape, dtype),
          max_abs_state=_max_abs(x, chain_ndims),
          seed=samplers.zeros_seed())

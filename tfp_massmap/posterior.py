"""Posterior samples and MAP of a convergence map under a score prior.

`PosteriorSampler` draws independent samples of p(κ | γ) for a prior known
through its score (a `ScoreNetwork`, a `GaussianPrior`, any
`tfp_massmap.priors.Prior`), with the annealed HMC of docs/design.md: a
batch of chains starts at a large noise level σ_max, anneals to σ_min, and
each chain's final state (optionally denoised by one Tweedie step) is one
sample. It is built once per prior, schedule and kernel settings and
compiles its functions once per map shape and dtype: the observations enter
them as tensor arguments, so it maps any number of shear maps without
retracing. `sample_posterior` is the one-call form; it reuses the sampler of
an earlier call with the same prior and settings. `map_estimate` runs the
same annealing with deterministic score ascent. Shear, convergence and noise
levels are dimensionless.

Both refuse, before any sampling, data whose dtype differs from the prior's
and data whose pixel scale differs from the one the prior is valid at (when
both are known; `tfp_massmap.priors.check_prior`). The sampler counts the
chains that diverged (a non-finite state, or a pixel beyond |κ| =
``divergence_bound``, 10 by default: |κ| of real maps stays below 1), warns
about them, and `PosteriorSamples.drop_diverged` removes them.
"""

import collections
import time
import warnings

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.internal import samplers

from tfp_massmap import _checks
from tfp_massmap import likelihood as likelihood_lib
from tfp_massmap import priors
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap.mcmc import annealed_hmc
from tfp_massmap.mcmc import driver
from tfp_massmap.mcmc import results
from tfp_massmap.mcmc import schedules

__all__ = [
    'DEFAULT_DIVERGENCE_BOUND',
    'PosteriorSampler',
    'PosteriorSamples',
    'annealed_posterior_score_fn',
    'credible_interval',
    'default_schedule',
    'map_estimate',
    'sample_posterior',
]

PosteriorSamples = results.PosteriorSamples
credible_interval = results.credible_interval

# Default annealing (dimensionless convergence): 1 + 30 × 3 + 1 = 92 score
# evaluations per sample. The leapfrog step is half the noise level: an exact
# σ-smoothed prior has curvature at most 1/σ², so ε = σ would be stable, but a
# trained denoiser's Jacobian is not bounded by 1 and with ε = σ the shipped
# prior's chains run away at σ ≈ 0.01-0.03 (docs/benchmarks.md, "Annealing
# for the learned prior"); ε = σ/2 leaves a factor 4 margin in curvature.
DEFAULT_SIGMA_MAX = 0.1
DEFAULT_SIGMA_MIN = 1e-3
DEFAULT_NUM_LEVELS = 30
DEFAULT_NUM_LEAPFROG_STEPS = 3
DEFAULT_STEP_SIZE_FACTOR = 0.5

# A chain whose state ever has a pixel with |κ| above this bound (or a NaN or
# inf) has diverged: real convergence maps stay below |κ| = 1, and the chains
# start within a few σ_max of the initial state.
DEFAULT_DIVERGENCE_BOUND = 10.
# Starting states reach about max|initial_state| + 6 σ_max; the divergence
# bound must lie above that.
_START_EXTENT_SIGMAS = 6.

# Steps per call of the compiled sampler (one progress-bar update each).
_MAX_CHUNK_STEPS = 100

_METHODS = ('hmc', 'mala', 'ula')

# Samplers `sample_posterior` keeps for later calls (least recently used
# dropped first); each holds its prior.
_SAMPLER_CACHE_SIZE = 4
_sampler_cache = collections.OrderedDict()


def default_schedule():
  """The default annealing: σ from 0.1 to 1e-3 in 30 geometric levels."""
  return schedules.GeometricSchedule(
      sigma_max=DEFAULT_SIGMA_MAX, sigma_min=DEFAULT_SIGMA_MIN,
      num_levels=DEFAULT_NUM_LEVELS)


def annealed_posterior_score_fn(shear, noise_std, mask, prior):
  """The annealed posterior score (x, σ) ↦ ∇log p_σ(κ | γ) at κ = x.

  ∇log p_σ(κ | γ) = ∇_κ log p_σ(γ | κ) + s_σ(κ): the gradient of the
  `ShearLikelihood` with variance noise_std² + σ² (by automatic
  differentiation) plus the prior score ``prior.score(x, sigma)``.

  Args:
    shear: observed mean ellipticity ``[N, N, 2]`` (values off the mask are
      ignored).
    noise_std: its standard deviation, ``[N, N]`` or ``[N, N, 2]``.
    mask: ``[N, N]``, the 0/1 indicator of observed pixels.
    prior: an object with ``score(x, sigma)`` for maps ``[..., N, N]``.

  Returns:
    A callable ``(x [..., N, N], sigma scalar) -> [..., N, N]``.
  """
  def score(kappa, sigma):
    with tf.GradientTape() as tape:
      tape.watch(kappa)
      log_likelihood = likelihood_lib.ShearLikelihood(
          kappa, noise_std, mask, extra_variance=tf.square(sigma)).log_prob(
              shear)
    return tape.gradient(log_likelihood, kappa) + prior.score(kappa, sigma)
  return score


def _checked_data(shear_map, prior, allow_pixel_scale_mismatch, caller):
  """The validated one-map `ShearMap` and the pixel scales, before any work.

  Returns:
    (shear_map, pixel_scales): a `ShearMap` of tensors in the data's dtype
    (float64 data stay float64, others become float32), and a dict with the
    data's ``pixel_scale_arcmin`` and the ``prior_pixel_scale_arcmin``
    (None where unknown).
  """
  if not all(hasattr(shear_map, a) for a in ('shear', 'noise_std', 'mask')):
    raise ValueError(
        f'{caller} takes the data as a ShearMap (attributes shear, noise_std, '
        f'mask, pixel_scale_arcmin), got {type(shear_map).__name__}; for '
        f'arrays pass tfp_massmap.ShearMap(shear, noise_std, mask, '
        'pixel_scale_arcmin=...).')
  declared = _checks.declared_float_dtype(shear_map.shear)
  dtype = tf.float64 if declared == tf.float64 else tf.float32
  data = shear_map_lib.as_shear_map(shear_map, dtype=dtype)
  if data.shear.shape.rank != 3:
    raise ValueError(f'shear must be one map [N, N, 2], got shape '
                     f'{data.shear.shape}.')
  n = int(data.shear.shape[0])
  if data.noise_std.shape.rank > 3 or data.noise_std.shape[:2] != [n, n]:
    raise ValueError(f'noise_std must have shape [N, N] or [N, N, 2] with '
                     f'N = {n} (one map), got shape {data.noise_std.shape}.')
  if data.mask.shape != [n, n]:
    raise ValueError(f'mask must have shape [N, N] = [{n}, {n}] (one map), '
                     f'got shape {data.mask.shape}.')
  check = priors.check_prior(
      prior, data, dtype=dtype,
      allow_pixel_scale_mismatch=allow_pixel_scale_mismatch)
  return data, dict(pixel_scale_arcmin=check.pixel_scale_arcmin,
                    prior_pixel_scale_arcmin=check.prior_pixel_scale_arcmin)


def _checked_schedule(schedule):
  if schedule is None:
    return default_schedule()
  if not (callable(getattr(schedule, 'sigma', None)) and
          hasattr(schedule, 'num_steps')):
    raise ValueError('schedule must have a sigma(step) method and a '
                     f'num_steps attribute (a GeometricSchedule, ...), got '
                     f'{schedule!r}.')
  return schedule


def _method_settings(method, num_leapfrog_steps, metropolis_correction):
  """(num_leapfrog_steps, metropolis_correction) for a sampling method."""
  if method not in _METHODS:
    raise ValueError(f'method must be one of {_METHODS}, got {method!r}.')
  if method == 'hmc':
    if num_leapfrog_steps is None:
      num_leapfrog_steps = DEFAULT_NUM_LEAPFROG_STEPS
    return (_checks.positive_int(num_leapfrog_steps, 'num_leapfrog_steps'),
            bool(metropolis_correction))
  # MALA and ULA are HMC with one leapfrog step (step h = ε²/2), with and
  # without the Metropolis test.
  if num_leapfrog_steps not in (None, 1):
    raise ValueError(f'method={method!r} takes one leapfrog step per '
                     'transition; got num_leapfrog_steps='
                     f'{num_leapfrog_steps}.')
  wanted = method == 'mala'
  if metropolis_correction not in (None, wanted):
    raise ValueError(f'method={method!r} means metropolis_correction='
                     f'{wanted}; got metropolis_correction='
                     f'{metropolis_correction}.')
  return 1, wanted


def _initial_state(initial_state, num_chains, n, dtype, name):
  """Validated initial maps broadcast to ``[num_chains, N, N]`` (or zeros)."""
  if initial_state is None:
    return tf.zeros([num_chains, n, n], dtype)
  initial_state = np.asarray(initial_state, dtype.as_numpy_dtype)
  if initial_state.shape not in ((n, n), (num_chains, n, n)):
    raise ValueError(f'{name} must have shape [N, N] or [{num_chains}, N, N] '
                     f'with N = {n}, got shape {initial_state.shape}.')
  _checks.finite(initial_state, name)
  return tf.broadcast_to(tf.constant(initial_state), [num_chains, n, n])


def _check_divergence_bound(divergence_bound, start_maps, schedule):
  """The bound as a float, checked to lie above the starting states."""
  bound = _checks.positive_scalar(divergence_bound, 'divergence_bound')
  reach = (float(tf.reduce_max(tf.abs(start_maps))) +
           _START_EXTENT_SIGMAS * float(schedule.sigma(0)))
  if bound <= reach:
    raise ValueError(
        f'divergence_bound={divergence_bound!r} must exceed the reach of the '
        f'starting states, max|initial_state| + {_START_EXTENT_SIGMAS:g} '
        f'sigma_max = {reach:.3g}, or every chain would count as diverged.')
  return bound


def _accept_probability(energy_error):
  """min(1, exp(−ΔH)) per chain, 0 where ΔH is NaN."""
  energy_error = tf.where(tf.math.is_nan(energy_error),
                          tf.constant(np.inf, energy_error.dtype),
                          energy_error)
  return tf.exp(-tf.maximum(energy_error, 0.))


def _trace_fn(state, kernel_results):
  return (state, kernel_results.sigma,
          _accept_probability(kernel_results.energy_error))


def chain_diagnostics(sampler, finals, finite, divergence_bound, wall_time,
                      final_step_size_factor):
  """The diagnostics of an annealed sampler's run, from its kernel results.

  Shared by `PosteriorSampler` and `joint_posterior.JointPosteriorSampler`
  (their docstrings list the entries).

  Args:
    sampler: the sampler (its schedule, kernel settings, ``settings`` and
      ``tracing_count``).
    finals: the final `AnnealedHMCKernelResults` of each chunk of chains.
    finite: bool ``[S]``, whether each chain's final state is finite.
    divergence_bound: the runaway bound on the state's absolute value.
    wall_time: seconds of the run.
    final_step_size_factor: ``[S]`` each chain's last step factor.

  Returns:
    A `dict` of diagnostics.
  """
  num_samples = int(np.size(finite))
  num_steps = sampler._schedule.num_steps  # pylint: disable=protected-access
  per_chain = lambda field: np.concatenate(
      [np.asarray(getattr(r, field), np.float64) for r in finals])
  accepted = per_chain('num_accepted') / num_steps
  max_abs = per_chain('max_abs_state')
  diverged = np.flatnonzero(~(max_abs <= divergence_bound) | ~finite)
  # pylint: disable=protected-access
  if sampler._metropolis_correction or sampler._num_leapfrog_steps > 1:
    would_be = (per_chain('sum_accept_probability') / num_steps).tolist()
  else:  # No part of a one-step trajectory is at a single noise level.
    would_be = None
  evaluations = int(finals[-1].num_score_evaluations) + int(sampler._tweedie)
  # pylint: enable=protected-access
  return dict(
      acceptance_rate=float(np.mean(accepted)),
      score_evaluations_per_sample=evaluations,
      num_score_evaluations=evaluations * num_samples,
      wall_time_s=wall_time,
      wall_time_per_sample_s=wall_time / num_samples,
      tracing_count=sampler.tracing_count(),
      **sampler.settings,
      divergence_bound=divergence_bound,
      acceptance_per_chain=accepted.tolist(),
      final_step_size_factor=np.asarray(final_step_size_factor).tolist(),
      num_diverged_chains=len(diverged),
      diverged_chains=diverged.tolist(),
      max_abs_kappa=[float(v) if np.isfinite(v) else None for v in max_abs],
      num_dropped_chains=0,
      dropped_chains=[],
      would_be_acceptance=would_be,
      **results.acceptance_summary(would_be))


class AnnealedSampler:
  """What the annealed samplers share: kernel settings and compiled functions.

  A subclass defines ``_make_kernel(target_score_fn)``, ``_kernel(shear,
  noise_std, mask)``, ``_start_fn`` and ``_finish_fn`` and calls `_setup`
  from its constructor, which checks the settings, builds a kernel once to
  check them, and compiles the start, chunk-of-transitions and finish
  functions (`tf.function`, XLA when ``jit_compile``) once for all maps.
  """

  def _setup(self, prior, schedule, *, method, num_leapfrog_steps,
             step_size_factor, metropolis_correction, tweedie, jit_compile):
    self._prior = prior
    self._schedule = schedule
    self._method = method
    self._num_leapfrog_steps, self._metropolis_correction = _method_settings(
        method, num_leapfrog_steps, metropolis_correction)
    self._step_size_factor = _checks.positive_scalar(step_size_factor,
                                                     'step_size_factor')
    self._tweedie = bool(tweedie)
    self._jit_compile = driver.default_jit_compile(jit_compile)
    self._make_kernel(lambda x, sigma: x)  # Checks the kernel settings now.
    self._start = tf.function(self._start_fn, jit_compile=self._jit_compile,
                              autograph=False)
    self._advance = driver.compile_chain(self._kernel,
                                         jit_compile=self._jit_compile)
    self._finish = tf.function(self._finish_fn, jit_compile=self._jit_compile,
                               autograph=False)
    self._compiled = [self._start, self._advance, self._finish]

  @property
  def prior(self):
    return self._prior

  @property
  def schedule(self):
    return self._schedule

  @property
  def jit_compile(self):
    return self._jit_compile

  def tracing_count(self):
    """How many times the compiled functions were traced so far (int)."""
    return sum(f.experimental_get_tracing_count() for f in self._compiled)


class PosteriorSampler(AnnealedSampler):
  """Annealed-HMC posterior sampler, compiled once, for many shear maps.

  Holds a prior, a noise schedule and the kernel settings, and builds its
  compiled functions (start, chunk of transitions, Tweedie step) once in the
  constructor. The data, the starting maps and the seeds are their tensor
  arguments, so each map shape, dtype and chain count is traced (and under
  XLA compiled) on first use only: the second and later `sample` calls on
  the same shape take the sampling time alone.

  Each of ``num_samples`` chains starts at ``initial_state + σ_max · z``,
  z ~ N(0, I), runs `AnnealedHamiltonianMonteCarlo` on the annealed
  posterior score (`annealed_posterior_score_fn`) while the schedule lowers
  σ from σ_max to σ_min, and its final state x, denoised by one Tweedie step
  x̂ = E_prior[κ | x] at σ_min when ``tweedie``, is one sample. Chains run
  ``batch_size`` at a time, each batch through `tfp.mcmc.sample_chain` in
  chunks of at most 100 steps (`tfp_massmap.mcmc.driver`).

  #### Example

  ```python
  sampler = PosteriorSampler(tfp_massmap.load_prior())
  for tile in tiles:                       # ShearMaps of one size
    result = sampler.sample(tile, num_samples=40, seed=(tile.index, 0))
  ```
  """

  def __init__(self,
               prior,
               *,
               schedule=None,
               method='hmc',
               num_leapfrog_steps=None,
               step_size_factor=DEFAULT_STEP_SIZE_FACTOR,
               metropolis_correction=None,
               target_accept_prob=None,
               tweedie=True,
               jit_compile=None):
    """Builds the sampler; checks every setting.

    Args:
      prior: a `tfp_massmap.priors.Prior`: an object with ``score(x,
        sigma)`` (and optionally ``denoise(x, sigma)``) for maps
        ``[..., N, N]``, such as a `ScoreNetwork` or a `GaussianPrior`.
      schedule: the noise schedule, a `GeometricSchedule`,
        `ConstantSchedule` or any object with ``sigma(step)`` and
        ``num_steps``; default `default_schedule()` (σ from 0.1 to 1e-3 in
        30 geometric levels, one step each). σ_max should be at least the
        prior's pixel standard deviation, σ_min well below the posterior
        standard deviation (dimensionless).
      method: 'hmc', 'mala' (one leapfrog step with Metropolis correction)
        or 'ula' (one leapfrog step, no correction).
      num_leapfrog_steps: leapfrog steps per transition (default 3 for
        'hmc'; 'mala' and 'ula' use 1).
      step_size_factor: leapfrog step size / σ (dimensionless, in (0, √2):
        leapfrog is unstable on the annealed posterior from √2 on, see
        `AnnealedHamiltonianMonteCarlo`; default 0.5; about 1 suits an exact
        prior score).
      metropolis_correction: bool; default False for 'hmc' (accept every
        proposal), fixed by 'mala' and 'ula'.
      target_accept_prob: None (the step size factor stays fixed), or a
        mean acceptance probability in (0, 1) the kernel adapts the factor
        to, transition by transition, starting from ``step_size_factor``
        (all chains of a batch share it; see
        `AnnealedHamiltonianMonteCarlo`): this makes the Metropolis-corrected
        methods usable at small σ. Without correction it needs 2 or more
        leapfrog steps.
      tweedie: whether to denoise the final states at σ_min with the prior
        (``prior.denoise`` if it has one, else x + σ² score).
      jit_compile: compile with XLA; default True when a GPU is visible.

    Raises:
      ValueError: for a prior without a score or with malformed members, a
        bad schedule, method, leapfrog count, step_size_factor (outside
        (0, √2)) or target_accept_prob.
    """
    priors.prior_properties(prior)
    self._target_accept_prob = (
        None if target_accept_prob is None else
        _checks.positive_scalar(target_accept_prob, 'target_accept_prob'))
    self._setup(prior, _checked_schedule(schedule), method=method,
                num_leapfrog_steps=num_leapfrog_steps,
                step_size_factor=step_size_factor,
                metropolis_correction=metropolis_correction, tweedie=tweedie,
                jit_compile=jit_compile)
    self._advance_traced = driver.compile_chain(
        self._kernel, jit_compile=self._jit_compile, trace_fn=_trace_fn)
    self._compiled.append(self._advance_traced)

  @property
  def settings(self):
    """`dict` of the sampler's settings, as recorded in the diagnostics."""
    return dict(schedule=self._schedule, num_steps=self._schedule.num_steps,
                method=self._method,
                num_leapfrog_steps=self._num_leapfrog_steps,
                step_size_factor=self._step_size_factor,
                metropolis_correction=self._metropolis_correction,
                target_accept_prob=self._target_accept_prob,
                tweedie=self._tweedie, jit_compile=self._jit_compile)

  def _kernel(self, shear, noise_std, mask):
    return self._make_kernel(annealed_posterior_score_fn(shear, noise_std,
                                                         mask, self._prior))

  def _make_kernel(self, target_score_fn):
    return annealed_hmc.AnnealedHamiltonianMonteCarlo(
        target_score_fn=target_score_fn,
        schedule=self._schedule,
        step_size_factor=self._step_size_factor,
        num_leapfrog_steps=self._num_leapfrog_steps,
        metropolis_correction=self._metropolis_correction,
        target_accept_prob=self._target_accept_prob)

  def _start_fn(self, maps, seed, shear, noise_std, mask):
    sigma = tf.cast(self._schedule.sigma(0), maps.dtype)
    state = maps + sigma * samplers.normal(tf.shape(maps), dtype=maps.dtype,
                                           seed=seed)
    return state, self._kernel(shear, noise_std, mask).bootstrap_results(
        state)

  def _finish_fn(self, state):
    sigma = tf.cast(self._schedule.sigma(self._schedule.num_steps - 1),
                    state.dtype)
    return priors.denoise(self._prior, state, sigma)

  def sample(self,
             shear_map,
             *,
             num_samples=64,
             initial_state=None,
             batch_size=None,
             seed=None,
             num_trace_steps=0,
             divergence_bound=DEFAULT_DIVERGENCE_BOUND,
             allow_pixel_scale_mismatch=False,
             progress=False,
             devices=None):
    """Independent posterior samples of the convergence map of ``shear_map``.

    Every argument is checked before sampling starts. A chain whose state
    ever holds a NaN or inf, or a pixel with |κ| > ``divergence_bound``, has
    diverged: such chains are listed in ``diagnostics['diverged_chains']``
    and a `RuntimeWarning` gives their number; their samples are junk and
    enter the summaries unless removed with `PosteriorSamples.drop_diverged`.

    Args:
      shear_map: the data, a `tfp_massmap.ShearMap` (or an object with
        ``shear`` ``[N, N, 2]``, ``noise_std`` ``[N, N]`` or ``[N, N, 2]``,
        ``mask`` ``[N, N]`` or None, and optionally ``pixel_scale_arcmin``
        in arcmin), checked by `tfp_massmap.as_shear_map`. float64 data run
        in float64, others in float32; it must match the prior's ``dtype``
        when the prior has one.
      num_samples: number of independent samples (= chains), int >= 1. With
        1 sample, ``std`` and the intervals are None.
      initial_state: optional map ``[N, N]`` or ``[num_samples, N, N]`` the
        chains start around (e.g. a Wiener filter map); default zero.
      batch_size: chains per batch (int >= 1); default all at once, or an
        equal share per device with ``devices``. Each batch size is traced
        once.
      seed: stateless seed (e.g. ``(1, 2)``), or None for a random one. The
        same seed gives the same samples for the same ``jit_compile`` and
        ``batch_size`` (XLA uses another stateless RNG algorithm).
      num_trace_steps: keep the states of the last ``num_trace_steps``
        transitions of every chain in ``result.trace`` (a `ChainTrace`,
        ``[T, num_samples, N, N]``, chain axis second), int >= 0; 0 keeps
        none. At a constant final noise level (e.g. the last level of a
        schedule with several steps per level, or a `ConstantSchedule`)
        ``tfp.mcmc.potential_scale_reduction(result.trace.states)`` is the
        R-hat of those steps.
      divergence_bound: a chain with a pixel |κ| above this (dimensionless)
        at any step has diverged; default 10 (`DEFAULT_DIVERGENCE_BOUND`).
        Must exceed max|initial_state| + 6 σ_max, the reach of the starting
        states.
      allow_pixel_scale_mismatch: Python bool; by default a data pixel
        scale that differs by more than 1 %
        (`tfp_massmap.priors.PIXEL_SCALE_TOLERANCE`) from the prior's
        ``pixel_scale_arcmin`` (when both are known) is an error; True
        samples anyway.
      progress: show a tqdm progress bar.
      devices: optional sequence of device names (e.g. the names of
        ``tf.config.list_logical_devices('GPU')``): the batches of chains
        run on them at once, one thread per device, batch i on device
        i mod len(devices). Chains are independent, so the samples are
        those of the same ``batch_size`` and seed on one device (up to the
        devices' arithmetic).

    Returns:
      A `PosteriorSamples` (`tfp_massmap.mcmc.results`): ``samples``
      ``[S, N, N]`` (one per chain), their mean, std and intervals, the
      trace, and ``diagnostics``, a `dict` of Python values
      (JSON-serialisable except ``schedule``):

      * run: ``acceptance_rate`` (fraction of accepted transitions, 1
        without Metropolis correction), ``score_evaluations_per_sample``
        (prior score evaluations per chain, Tweedie step included),
        ``num_score_evaluations`` (total single-map evaluations),
        ``wall_time_s`` and ``wall_time_per_sample_s`` (seconds, any
        compilation included), ``tracing_count`` (traces of the compiled
        functions so far: unchanged by a call that reused them), and the
        settings used (`settings`, ``batch_size``, ``num_trace_steps``,
        ``divergence_bound``, ``pixel_scale_arcmin`` of the data and
        ``prior_pixel_scale_arcmin``, None where unknown). These describe
        the whole run, dropped chains included.
      * per chain (lists in the order of ``samples``):
        ``acceptance_per_chain``; ``final_step_size_factor``, the step size
        factor of the chain's last transition (``step_size_factor`` unless
        adapted to ``target_accept_prob``); ``max_abs_kappa``, the largest |κ| of the
        chain's states over the whole run (before the Tweedie step; None
        where non-finite); ``would_be_acceptance``, the mean over
        transitions of the Metropolis acceptance probability
        min(1, exp(−ΔH)) from the line-integral energy error ΔH
        (`AnnealedHamiltonianMonteCarlo`): the probability actually used
        with correction; without correction the one a Metropolis test would
        have used on the first ``num_leapfrog_steps − 1`` leapfrog steps of
        each trajectory, at no extra score evaluation. Near 1: accurate
        leapfrog; well below 1: the step is too large for the prior (the
        samples carry discretisation bias or diverge). None without
        correction and with one leapfrog step (method 'ula'), where no part
        of a trajectory is checked; ``mean_would_be_acceptance`` and
        ``min_would_be_acceptance`` over chains likewise.
      * divergence: ``num_diverged_chains`` (int) and ``diverged_chains``
        (sorted list of indices into ``samples``): chains whose state at
        some step held a NaN or inf or a pixel with |κ| >
        ``divergence_bound``, or whose sample is not finite;
        ``num_dropped_chains`` and ``dropped_chains`` (indices in the
        original run), set by `drop_diverged`.

    Raises:
      ValueError: before sampling, for data that are not a ShearMap or not
        one map, non-finite shear on an observed pixel, an empty or
        non-0/1 mask, bad noise, shapes that do not match, a prior that
        does not fit N×N maps, data whose dtype differs from the prior's, a
        pixel scale that differs from the prior's, or bad settings.

    Warns:
      RuntimeWarning: when chains diverged, naming how many.
    """
    data, pixel_scales = _checked_data(shear_map, self._prior,
                                       allow_pixel_scale_mismatch,
                                       'sample_posterior')
    dtype = data.shear.dtype
    n = int(data.shear.shape[0])
    num_samples = _checks.positive_int(num_samples, 'num_samples')
    devices = _checked_devices(devices)
    if batch_size is not None:
      batch_size = min(_checks.positive_int(batch_size, 'batch_size'),
                       num_samples)
    else:
      batch_size = -(-num_samples // len(devices or [None]))
    num_steps = self._schedule.num_steps
    num_trace_steps = _checks.positive_int(num_trace_steps, 'num_trace_steps',
                                           minimum=0)
    if num_trace_steps > num_steps:
      raise ValueError(f'num_trace_steps must be at most the schedule\'s '
                       f'num_steps = {num_steps}, got {num_trace_steps}.')
    start_maps = _initial_state(initial_state, num_samples, n, dtype,
                                'initial_state')
    divergence_bound = _check_divergence_bound(divergence_bound, start_maps,
                                               self._schedule)
    data_args = (data.shear, data.noise_std, data.mask)

    seed = samplers.sanitize_seed(seed, salt='sample_posterior')
    untraced = num_steps - num_trace_steps
    untraced_chunks = (driver.chunk_lengths(untraced, _MAX_CHUNK_STEPS)
                       if untraced else [])
    traced_chunks = (driver.chunk_lengths(num_trace_steps, _MAX_CHUNK_STEPS)
                     if num_trace_steps else [])

    def run_batch(first, batch_seed, bar):
      init_seed, run_seed, trace_seed = samplers.split_seed(batch_seed, n=3)
      state, kernel_results = self._start(
          start_maps[first:first + batch_size], init_seed, *data_args)
      state, kernel_results, _ = driver.run_chunks(
          self._advance, state, kernel_results, untraced_chunks, run_seed,
          *data_args, progress_bar=bar)
      state, kernel_results, batch_traces = driver.run_chunks(
          self._advance_traced, state, kernel_results, traced_chunks,
          trace_seed, *data_args, progress_bar=bar)
      if self._tweedie:
        state = self._finish(state)
      return state, kernel_results, batch_traces

    outputs, wall_time = driver.run_batches(
        run_batch, num_samples, batch_size, seed, num_steps=num_steps,
        desc='annealed HMC', progress=progress, devices=devices)
    samples = [state for state, _, _ in outputs]
    finals = [kernel_results for _, kernel_results, _ in outputs]
    traces = [[tf.concat(part, axis=0) for part in zip(*batch_traces)]
              for _, _, batch_traces in outputs if batch_traces]
    samples = tf.concat(samples, axis=0)
    trace = None
    if traces:
      states, sigma, accept = zip(*traces)
      trace = results.ChainTrace(states=tf.concat(states, axis=1),
                                 sigma=sigma[0],
                                 accept_probability=tf.concat(accept, axis=1))
    diagnostics = self._diagnostics(samples, finals, divergence_bound,
                                    wall_time)
    diagnostics.update(batch_size=batch_size,
                       num_trace_steps=num_trace_steps,
                       devices=list(devices) if devices else None,
                       **pixel_scales)
    diverged = diagnostics['num_diverged_chains']
    if diverged:
      warnings.warn(
          f'{diverged} of {num_samples} chains diverged (a state with NaN, '
          f'inf or |kappa| > {divergence_bound:g}; indices in '
          "diagnostics['diverged_chains']): their samples are junk and spoil "
          'the mean, std and intervals. Use a smaller step_size_factor (now '
          f'{self._step_size_factor:g}) or check the prior; '
          'PosteriorSamples.drop_diverged() removes them.', RuntimeWarning)
    return results.from_samples(samples, diagnostics, trace=trace)

  def _diagnostics(self, samples, finals, divergence_bound, wall_time):
    """The diagnostics dict (`sample`) from the final kernel results."""
    final_factor = np.concatenate([
        np.broadcast_to(np.asarray(r.step_size, np.float64).ravel(),
                        np.shape(r.num_accepted)) for r in finals])
    finite = np.all(np.isfinite(samples.numpy()), axis=(1, 2))
    return chain_diagnostics(self, finals, finite, divergence_bound,
                             wall_time, final_factor)


def _checked_devices(devices):
  """``devices`` as a list of known device names, or None."""
  if devices is None:
    return None
  if isinstance(devices, str) or not devices:
    raise ValueError(f'devices must be a non-empty sequence of device names, '
                     f'got {devices!r}.')
  known = {d.name for d in tf.config.list_logical_devices()}
  devices = [str(getattr(d, 'name', d)) for d in devices]
  normalised = {tf.DeviceSpec.from_string(d).to_string() for d in known}
  unknown = [d for d in devices
             if tf.DeviceSpec.from_string(d).to_string() not in normalised]
  if unknown:
    raise ValueError(f'devices {unknown} are not logical devices of this '
                     f'process; expected some of {sorted(known)}.')
  return devices


def _schedule_key(schedule):
  """A key equal for schedules of the same type and parameters."""
  parameters = getattr(schedule, 'parameters', None)
  if isinstance(parameters, dict):
    return type(schedule), tuple(sorted(parameters.items()))
  return id(schedule)


def _cached_sampler(prior, schedule, settings):
  """A `PosteriorSampler` for these settings, reused from earlier calls."""
  key = (id(prior), _schedule_key(schedule), tuple(sorted(settings.items())))
  try:
    hash(key)
  except TypeError:  # Settings that are not values: checked, not kept.
    return PosteriorSampler(prior, schedule=schedule, **settings)
  sampler = _sampler_cache.get(key)
  if sampler is None or sampler.prior is not prior:
    sampler = PosteriorSampler(prior, schedule=schedule, **settings)
  _sampler_cache[key] = sampler
  _sampler_cache.move_to_end(key)
  while len(_sampler_cache) > _SAMPLER_CACHE_SIZE:
    _sampler_cache.popitem(last=False)
  return sampler


def sample_posterior(shear_map,
                     prior,
                     *,
                     num_samples=64,
                     schedule=None,
                     method='hmc',
                     num_leapfrog_steps=None,
                     step_size_factor=DEFAULT_STEP_SIZE_FACTOR,
                     metropolis_correction=None,
                     target_accept_prob=None,
                     tweedie=True,
                     initial_state=None,
                     batch_size=None,
                     seed=None,
                     num_trace_steps=0,
                     divergence_bound=DEFAULT_DIVERGENCE_BOUND,
                     allow_pixel_scale_mismatch=False,
                     jit_compile=None,
                     progress=True,
                     devices=None):
  """Independent posterior samples of a convergence map by annealed HMC.

  The one-call form of `PosteriorSampler`:
  ``PosteriorSampler(prior, schedule=..., method=..., ...).sample(shear_map,
  num_samples=..., ...)``. The sampler is kept for later calls with the same
  prior object and the same schedule (type and parameters) and kernel
  settings (the last 4 such combinations are kept), so the second and later
  calls on maps of the same shape do not retrace: they take the sampling
  time alone.

  Args:
    shear_map: the data, a `tfp_massmap.ShearMap` (see
      `PosteriorSampler.sample`).
    prior: a `tfp_massmap.priors.Prior`, e.g. a `ScoreNetwork` or a
      `GaussianPrior`.
    num_samples, initial_state, batch_size, seed, num_trace_steps,
      divergence_bound, allow_pixel_scale_mismatch, progress, devices: as
      in `PosteriorSampler.sample`.
    schedule, method, num_leapfrog_steps, step_size_factor,
      metropolis_correction, target_accept_prob, tweedie, jit_compile: as
      in `PosteriorSampler` (default schedule: `default_schedule()`).

  Returns:
    A `PosteriorSamples` (see `PosteriorSampler.sample`).

  Raises:
    ValueError: as `PosteriorSampler` and `PosteriorSampler.sample`, before
      any sampling.

  Warns:
    RuntimeWarning: when chains diverged, naming how many.
  """
  sampler = _cached_sampler(
      prior, _checked_schedule(schedule), dict(
          method=method, num_leapfrog_steps=num_leapfrog_steps,
          step_size_factor=step_size_factor,
          metropolis_correction=metropolis_correction,
          target_accept_prob=target_accept_prob, tweedie=bool(tweedie),
          jit_compile=driver.default_jit_compile(jit_compile)))
  return sampler.sample(
      shear_map, num_samples=num_samples, initial_state=initial_state,
      batch_size=batch_size, seed=seed, num_trace_steps=num_trace_steps,
      divergence_bound=divergence_bound,
      allow_pixel_scale_mismatch=allow_pixel_scale_mismatch,
      progress=progress, devices=devices)


def map_estimate(shear_map,
                 prior,
                 *,
                 schedule=None,
                 step_size_factor=0.5,
                 initial_state=None,
                 allow_pixel_scale_mismatch=False,
                 jit_compile=None):
  """Maximum a posteriori map by annealed score ascent.

  Deterministic gradient ascent on the annealed posterior,
  x ← x + η_k ∇log p_σk(x | γ) with η_k = step_size_factor · σ_k², while
  the schedule lowers σ_k (default `default_schedule()`). The annealed
  posterior's curvature is at most 2/σ² (see
  `AnnealedHamiltonianMonteCarlo`) and the ascent multiplies a direction of
  curvature c by 1 − η c, so it is stable for η · 2/σ² < 2, i.e.
  ``step_size_factor < 1``. Large σ smooths away local maxima of a
  non-Gaussian prior; the result maximises p_σmin(κ | γ). For a Gaussian
  prior it converges to the Wiener filter.

  Args:
    shear_map, prior, schedule, initial_state (one map ``[N, N]``),
      allow_pixel_scale_mismatch, jit_compile: as in `sample_posterior`.
    step_size_factor: η / σ² (dimensionless, in (0, 1)).

  Returns:
    (kappa, info): the MAP map ``[N, N]`` and a dict with
    ``num_score_evaluations``, ``wall_time_s``, and the data's
    ``pixel_scale_arcmin`` and ``prior_pixel_scale_arcmin`` (None where
    unknown).

  Raises:
    ValueError: as `sample_posterior`, or a step_size_factor outside (0, 1).
  """
  data, pixel_scales = _checked_data(shear_map, prior,
                                     allow_pixel_scale_mismatch,
                                     'map_estimate')
  schedule = _checked_schedule(schedule)
  dtype = data.shear.dtype
  n = int(data.shear.shape[0])
  factor = _checks.positive_scalar(step_size_factor, 'step_size_factor')
  if factor >= 1:
    raise ValueError(f'step_size_factor must be in (0, 1), where the ascent '
                     'is stable on the annealed posterior (curvature <= '
                     f'2/sigma²), got {step_size_factor!r}.')
  x0 = _initial_state(initial_state, 1, n, dtype, 'initial_state')
  score_fn = annealed_posterior_score_fn(data.shear, data.noise_std,
                                         data.mask, prior)
  num_steps = schedule.num_steps

  @tf.function(jit_compile=driver.default_jit_compile(jit_compile),
               autograph=False)
  def ascend(x):
    def body(step, x):
      sigma = tf.cast(schedule.sigma(step), dtype)
      rate = tf.constant(factor, dtype) * tf.square(sigma)
      return step + 1, x + rate * score_fn(x, sigma)
    _, x = tf.while_loop(lambda step, x: step < num_steps, body,
                         (tf.constant(0), x))
    return x

  began = time.perf_counter()
  kappa = ascend(x0)[0]
  info = dict(num_score_evaluations=num_steps,
              wall_time_s=time.perf_counter() - began, **pixel_scales)
  return kappa, info

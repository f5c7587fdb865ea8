"""Posterior samples and MAP of a convergence map in one call.

`sample_posterior` draws independent samples of p(κ | γ) for a prior known
through its score (a `ScoreNetwork`, a `GaussianPrior`, or any object with
``score(x, sigma)``), with the annealed HMC of DESIGN.md §1: a batch of
chains starts at a large noise level σ_max, anneals to σ_min, and each
chain's final state (optionally denoised by one Tweedie step) is one sample.
`map_estimate` runs the same annealing with deterministic score ascent.
Shear, convergence and noise levels are dimensionless.

Both refuse, before any sampling, data whose dtype differs from the prior's
and data whose pixel scale differs from the one the prior is valid at (when
both are known). `sample_posterior` counts the chains that diverged (a
non-finite state, or a pixel beyond |κ| = ``divergence_bound``, 10 by
default: |κ| of real maps stays below 1), warns about them, and
`PosteriorSamples.drop_diverged` removes them.
"""

import collections
import math
import time
import warnings

import numpy as np
import tensorflow as tf
import tqdm

from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.mcmc import sample as sample_lib

from tfp_massmap import _checks
from tfp_massmap import likelihood as likelihood_lib
from tfp_massmap.mcmc import annealed_hmc
from tfp_massmap.mcmc import schedules

__all__ = [
    'DEFAULT_DIVERGENCE_BOUND',
    'PIXEL_SCALE_TOLERANCE',
    'PosteriorSamples',
    'annealed_posterior_score_fn',
    'credible_interval',
    'map_estimate',
    'sample_posterior',
]

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
# Relative difference between the data's and the prior's pixel scales that
# is tolerated without allow_pixel_scale_mismatch.
PIXEL_SCALE_TOLERANCE = 0.01

# Steps per call of the compiled sampler (one progress-bar update each).
_MAX_CHUNK_STEPS = 100

_METHODS = ('hmc', 'mala', 'ula')


class PosteriorSamples(
    collections.namedtuple('PosteriorSamples', [
        'samples', 'mean', 'std', 'interval_68', 'interval_95',
        'diagnostics'])):
  """Posterior samples of a convergence map and their per-pixel summaries.

  Attributes:
    samples: ``[S, N, N]`` independent samples (dimensionless convergence).
    mean: ``[N, N]`` posterior mean (sample mean).
    std: ``[N, N]`` posterior standard deviation (sample std, 1/S
      normalisation); None when S = 1.
    interval_68: ``[2, N, N]`` lower and upper bounds of the central 68 %
      per-pixel credible interval (16th and 84th percentiles, see
      `credible_interval`); None when S = 1.
    interval_95: ``[2, N, N]``, the same for 95 % (2.5th and 97.5th); it
      needs at least 39 samples (`credible_interval`); None when S = 1.
    diagnostics: `dict` of Python values (JSON-serialisable except
      ``schedule``):

      * run: ``acceptance_rate`` (fraction of accepted transitions, 1
        without Metropolis correction), ``score_evaluations_per_sample``
        (prior score evaluations per chain, i.e. per independent sample,
        Tweedie step included), ``num_score_evaluations`` (total single-map
        evaluations), ``wall_time_s`` and ``wall_time_per_sample_s``
        (seconds, compilation included), and the settings used
        (``schedule``, ``num_steps``, ``method``, ``num_leapfrog_steps``,
        ``step_size_factor``, ``metropolis_correction``, ``tweedie``,
        ``batch_size``, ``jit_compile``, ``divergence_bound``,
        ``pixel_scale_arcmin`` of the data and ``prior_pixel_scale_arcmin``,
        None where unknown). These describe the whole run, dropped chains
        included.
      * divergence: ``num_diverged_chains`` (int) and ``diverged_chains``
        (sorted list of indices into ``samples``): chains whose state at
        some step held a NaN or inf or a pixel with |κ| >
        ``divergence_bound``, or whose sample is not finite;
        ``max_abs_kappa``, per chain, the largest |κ| of its states over the
        whole run (before the Tweedie step; None where non-finite);
        ``num_dropped_chains`` and ``dropped_chains`` (indices in the
        original run), set by `drop_diverged`.
      * integration accuracy: ``would_be_acceptance``, per chain, the mean
        over transitions of the Metropolis acceptance probability
        min(1, exp(−ΔH)) from the line-integral energy error ΔH
        (`AnnealedHamiltonianMonteCarlo`): the probability actually used
        with correction; without correction the one a Metropolis test would
        have used on the first ``num_leapfrog_steps − 1`` leapfrog steps of
        each trajectory, at no extra score evaluation. Near 1: accurate
        leapfrog; well below 1: the step is too large for the prior (the
        samples carry discretisation bias or diverge).
        ``mean_would_be_acceptance`` and ``min_would_be_acceptance`` over
        chains. All three are None without correction and with one leapfrog
        step (method 'ula'), where no part of a trajectory is checked.
  """
  __slots__ = ()

  def drop_diverged(self):
    """The same samples without the diverged chains.

    Returns:
      ``self`` when no chain diverged; else a new `PosteriorSamples` of the
      other chains, with ``mean``, ``std`` and intervals recomputed, the
      per-chain diagnostics (``max_abs_kappa``, ``would_be_acceptance``)
      restricted to them and their means and minima recomputed,
      ``num_diverged_chains`` 0, and ``num_dropped_chains`` and
      ``dropped_chains`` (indices in the original run) set.

    Raises:
      ValueError: if fewer than 2 chains would remain.
    """
    diverged = list(self.diagnostics.get('diverged_chains', []))
    if not diverged:
      return self
    num = int(self.samples.shape[0])
    keep = sorted(set(range(num)) - set(diverged))
    if len(keep) < 2:
      raise ValueError(
          f'{len(diverged)} of {num} chains diverged; fewer than 2 would '
          'remain, too few for posterior summaries. Rerun with a smaller '
          'step_size_factor or more chains.')
    diagnostics = dict(self.diagnostics)
    for key in _PER_CHAIN_DIAGNOSTICS:
      if diagnostics.get(key) is not None:
        diagnostics[key] = [diagnostics[key][i] for i in keep]
    diagnostics.update(
        _acceptance_summary(diagnostics.get('would_be_acceptance')))
    diagnostics.update(num_diverged_chains=0, diverged_chains=[],
                       num_dropped_chains=len(diverged),
                       dropped_chains=diverged)
    return _summarise(tf.gather(self.samples, keep), diagnostics)


# Diagnostics with one entry per chain, in the order of the samples.
_PER_CHAIN_DIAGNOSTICS = ('max_abs_kappa', 'would_be_acceptance')


def _acceptance_summary(would_be_acceptance):
  """Mean and minimum over chains of the per-chain would-be acceptance."""
  if would_be_acceptance is None:
    return dict(mean_would_be_acceptance=None, min_would_be_acceptance=None)
  return dict(mean_would_be_acceptance=float(np.mean(would_be_acceptance)),
              min_would_be_acceptance=float(np.min(would_be_acceptance)))


def _summarise(samples, diagnostics):
  """`PosteriorSamples` with per-pixel summaries of ``samples`` [S, N, N]."""
  several = samples.shape[0] >= 2
  return PosteriorSamples(
      samples=samples,
      mean=tf.reduce_mean(samples, axis=0),
      std=tf.math.reduce_std(samples, axis=0) if several else None,
      interval_68=credible_interval(samples, 0.68) if several else None,
      interval_95=credible_interval(samples, 0.95) if several else None,
      diagnostics=diagnostics)


def _as_map_data(shear, noise_std, mask):
  """Unpacks a ShearMap-like object and validates the data; numpy arrays."""
  shear, noise_std, mask = _checks.unpack_shear_data(shear, noise_std, mask)
  shear = np.asarray(shear)
  dtype = np.float64 if shear.dtype == np.float64 else np.float32
  shear = shear.astype(dtype)
  if shear.ndim != 3:
    raise ValueError(
        f'shear must be one map [N, N, 2], got shape {shear.shape}.')
  n = _checks.square_map_shape(shear.shape, 'shear', channels=2)
  noise_std = np.asarray(noise_std, dtype)
  if noise_std.shape not in ((n, n), (n, n, 2)):
    raise ValueError(f'noise_std must have shape [N, N] or [N, N, 2] with '
                     f'N = {n}, got shape {noise_std.shape}.')
  if mask is None:
    mask = np.ones([n, n], dtype)
  mask = np.asarray(mask)
  if mask.shape != (n, n):
    raise ValueError(f'mask must have shape [N, N] = [{n}, {n}], got shape '
                     f'{mask.shape}.')
  _checks.non_negative(mask.astype(np.float64), 'mask')
  observed = mask > 0
  if not observed.any():
    raise ValueError('mask has no pixel with data (all values are 0); at '
                     'least one observed pixel is needed.')
  bad = ~np.isfinite(shear[observed])
  if bad.any():
    raise ValueError(f'shear holds {int(bad.sum())} non-finite value(s) '
                     '(NaN or inf) inside the mask; expected finite values on '
                     'every observed pixel.')
  noise_on_data = noise_std[observed]
  bad = ~np.isfinite(noise_on_data) | (noise_on_data <= 0)
  if bad.any():
    raise ValueError(f'noise_std holds {int(bad.sum())} value(s) that are not '
                     f'finite and > 0 inside the mask (first: '
                     f'{noise_on_data[bad].ravel()[0]!r}).')
  shear = np.where(observed[..., None], shear, 0).astype(dtype)
  expand = observed[..., None] if noise_std.ndim == 3 else observed
  noise_std = np.where(expand, noise_std, 1).astype(dtype)
  return (tf.constant(shear), tf.constant(noise_std),
          tf.constant(observed.astype(dtype)))


def _data_pixel_scale(shear, pixel_scale_arcmin):
  """The data's pixel scale (arcmin): the keyword, the ShearMap's, or None."""
  carried = None
  if all(hasattr(shear, a) for a in ('shear', 'noise_std', 'mask')):
    carried = getattr(shear, 'pixel_scale_arcmin', None)
  if carried is not None:
    carried = _checks.positive_scalar(carried, 'shear.pixel_scale_arcmin',
                                      'arcmin')
  if pixel_scale_arcmin is None:
    return carried
  given = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                  'arcmin')
  if carried is not None and not math.isclose(given, carried, rel_tol=1e-6):
    raise ValueError(f'pixel_scale_arcmin={given!r} contradicts the pixel '
                     f'scale the shear map carries, {carried!r} arcmin; pass '
                     'one of them.')
  return given


def _prior_dtype(prior):
  """The float dtype the prior computes in, or None when it does not say."""
  dtype = getattr(prior, 'compute_dtype', None) or getattr(prior, 'dtype',
                                                            None)
  try:
    dtype = tf.as_dtype(dtype)
  except TypeError:
    return None
  return dtype if dtype in (tf.float32, tf.float64) else None


def _check_prior(prior, n, dtype):
  """Checks that ``prior`` has a score, fits N×N maps and ``dtype`` data."""
  if not callable(getattr(prior, 'score', None)):
    raise ValueError('prior must have a score(x, sigma) method (a '
                     f'ScoreNetwork, a GaussianPrior, ...), got {prior!r}.')
  prior_dtype = _prior_dtype(prior)
  if prior_dtype is not None and prior_dtype != dtype:
    raise ValueError(
        f'shear has dtype {dtype.name} but the prior computes in '
        f'{prior_dtype.name}; pass {prior_dtype.name} shear, noise_std and '
        f'mask (e.g. np.asarray(shear, np.{prior_dtype.name})), or a '
        f'{dtype.name} prior.')
  size = getattr(prior, 'num_pixels_per_side', None)
  if size is not None and size != n:
    raise ValueError(f'the prior is defined on {size}x{size} maps but the '
                     f'shear map is {n}x{n}.')
  depth = getattr(prior, 'depth', None)
  if isinstance(depth, int) and n % 2**depth:
    raise ValueError(f'the prior (depth {depth}) needs maps whose size is '
                     f'divisible by 2**depth = {2**depth}; the shear map is '
                     f'{n}x{n}.')


def annealed_posterior_score_fn(shear, noise_std, mask, prior):
  """The annealed posterior score (x, σ) ↦ ∇log p_σ(κ | γ) at κ = x.

  ∇log p_σ(κ | γ) = ∇_κ log p_σ(γ | κ) + s_σ(κ): the gradient of the
  `ShearLikelihood` with variance noise_std² + σ² (by automatic
  differentiation) plus the prior score ``prior.score(x, sigma)``.

  Args:
    shear: observed mean ellipticity ``[N, N, 2]`` (values off the mask are
      ignored).
    noise_std: its standard deviation, ``[N, N]`` or ``[N, N, 2]``.
    mask: ``[N, N]``, nonzero where the pixel has data.
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


def _check_pixel_scale(prior, data_scale, allow_mismatch):
  """Refuses data at another pixel scale than the prior's (when both known).

  Returns:
    The prior's pixel scale in arcmin (a float), or None when unknown.
  """
  if not isinstance(allow_mismatch, bool):
    raise ValueError('allow_pixel_scale_mismatch must be a Python bool, got '
                     f'{allow_mismatch!r}.')
  prior_scale = getattr(prior, 'pixel_scale_arcmin', None)
  if prior_scale is None:
    return None
  prior_scale = _checks.positive_scalar(prior_scale, 'prior.pixel_scale_arcmin',
                                        'arcmin')
  if (data_scale is not None and not allow_mismatch and
      abs(data_scale / prior_scale - 1.) > PIXEL_SCALE_TOLERANCE):
    raise ValueError(
        f'the data have {data_scale:g} arcmin pixels but the prior is valid at '
        f'{prior_scale:g} arcmin pixels (they differ by more than '
        f'{PIXEL_SCALE_TOLERANCE:.0%}): a prior learned at one pixel scale is '
        'the wrong prior at another. Bin the shear at '
        f'{prior_scale:g} arcmin, use a prior for {data_scale:g} arcmin, or '
        'pass allow_pixel_scale_mismatch=True to sample anyway.')
  return prior_scale


def _prepare(shear, noise_std, mask, prior, schedule, sigma_max, sigma_min,
             num_levels, steps_per_level, pixel_scale_arcmin,
             allow_pixel_scale_mismatch):
  """Validated data, schedule and pixel scales shared by the entry points.

  Returns:
    (shear, noise_std, mask, schedule, pixel_scales): ``pixel_scales`` is a
    dict with the data's ``pixel_scale_arcmin`` and the
    ``prior_pixel_scale_arcmin`` (None where unknown).
  """
  data_scale = _data_pixel_scale(shear, pixel_scale_arcmin)
  shear, noise_std, mask = _as_map_data(shear, noise_std, mask)
  _check_prior(prior, shear.shape[0], shear.dtype)
  prior_scale = _check_pixel_scale(prior, data_scale,
                                   allow_pixel_scale_mismatch)
  schedule = _make_schedule(schedule, sigma_max, sigma_min, num_levels,
                            steps_per_level)
  return shear, noise_std, mask, schedule, dict(
      pixel_scale_arcmin=data_scale, prior_pixel_scale_arcmin=prior_scale)


def _make_schedule(schedule, sigma_max, sigma_min, num_levels,
                   steps_per_level):
  if schedule is not None:
    given = dict(sigma_max=sigma_max, sigma_min=sigma_min,
                 num_levels=num_levels, steps_per_level=steps_per_level)
    given = {k: v for k, v in given.items() if v is not None}
    if given:
      raise ValueError(f'pass either schedule or its parameters, not both; got '
                       f'schedule={schedule!r} and {given}.')
    if not (callable(getattr(schedule, 'sigma', None)) and
            hasattr(schedule, 'num_steps')):
      raise ValueError('schedule must have a sigma(step) method and a '
                       f'num_steps attribute, got {schedule!r}.')
    return schedule
  return schedules.GeometricSchedule(
      sigma_max=DEFAULT_SIGMA_MAX if sigma_max is None else sigma_max,
      sigma_min=DEFAULT_SIGMA_MIN if sigma_min is None else sigma_min,
      num_levels=DEFAULT_NUM_LEVELS if num_levels is None else num_levels,
      steps_per_level=1 if steps_per_level is None else steps_per_level)


def _method_settings(method, num_leapfrog_steps, metropolis_correction):
  """(num_leapfrog_steps, metropolis_correction) for a sampling method."""
  if method not in _METHODS:
    raise ValueError(f'method must be one of {_METHODS}, got {method!r}.')
  if method == 'hmc':
    if num_leapfrog_steps is None:
      num_leapfrog_steps = DEFAULT_NUM_LEAPFROG_STEPS
    return num_leapfrog_steps, bool(metropolis_correction)
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


def _tweedie(prior, x, sigma):
  """Prior denoiser E[κ | x] at noise level σ (Tweedie's formula)."""
  if callable(getattr(prior, 'denoise', None)):
    return prior.denoise(x, sigma)
  return x + tf.square(sigma) * prior.score(x, sigma)


def _default_jit_compile(jit_compile):
  if jit_compile is None:
    return bool(tf.config.list_physical_devices('GPU'))
  return bool(jit_compile)


def _chunks(num_steps):
  """Splits num_steps into at most two distinct chunk lengths."""
  num_chunks = math.ceil(num_steps / _MAX_CHUNK_STEPS)
  size = math.ceil(num_steps / num_chunks)
  return [size] * (num_chunks - 1) + [num_steps - size * (num_chunks - 1)]


def sample_posterior(shear,
                     noise_std=None,
                     mask=None,
                     prior=None,
                     num_samples=64,
                     schedule=None,
                     sigma_max=None,
                     sigma_min=None,
                     num_levels=None,
                     steps_per_level=None,
                     num_leapfrog_steps=None,
                     step_size_factor=DEFAULT_STEP_SIZE_FACTOR,
                     method='hmc',
                     metropolis_correction=None,
                     tweedie=True,
                     initial_state=None,
                     batch_size=None,
                     seed=None,
                     jit_compile=None,
                     progress=True,
                     *,
                     divergence_bound=DEFAULT_DIVERGENCE_BOUND,
                     pixel_scale_arcmin=None,
                     allow_pixel_scale_mismatch=False):
  """Independent posterior samples of a convergence map by annealed HMC.

  Each of ``num_samples`` chains starts at ``initial_state + σ_max · z``,
  z ~ N(0, I), runs `AnnealedHamiltonianMonteCarlo` on the annealed
  posterior score (`annealed_posterior_score_fn`) while the schedule lowers
  σ from σ_max to σ_min, and its final state x, denoised by one Tweedie step
  x̂ = E_prior[κ | x] at σ_min when ``tweedie``, is one sample. Chains run
  ``batch_size`` at a time, each batch through `tfp.mcmc.sample_chain` in
  chunks of at most 100 steps (one progress-bar update each).

  Every argument is checked before sampling starts. A chain whose state
  ever holds a NaN or inf, or a pixel with |κ| > ``divergence_bound``, has
  diverged: such chains are listed in ``diagnostics['diverged_chains']``
  and a `RuntimeWarning` gives their number; their samples are junk and
  enter the summaries unless removed with `PosteriorSamples.drop_diverged`.
  ``diagnostics['would_be_acceptance']`` measures the leapfrog accuracy
  also without Metropolis correction (see `PosteriorSamples`).

  Args:
    shear: observed mean ellipticity ``[N, N, 2]`` (dimensionless), or a
      ShearMap-like object with attributes ``shear``, ``noise_std`` and
      ``mask`` (then leave ``noise_std`` and ``mask`` None) and optionally
      ``pixel_scale_arcmin``. float64 input runs in float64, anything else
      in float32; it must match the prior's dtype (``compute_dtype`` or
      ``dtype``) when the prior has one.
    noise_std: standard deviation of the shear per pixel, ``[N, N]`` or
      ``[N, N, 2]``; finite and > 0 inside the mask.
    mask: ``[N, N]``, nonzero where the pixel has data; default: all pixels.
    prior: an object with ``score(x, sigma)`` (and optionally
      ``denoise(x, sigma)``) for maps ``[..., N, N]``: a `ScoreNetwork` or a
      `GaussianPrior`.
    num_samples: number of independent samples (= chains), int >= 1. With
      1 sample, ``std`` and the intervals are None.
    schedule: a noise schedule (`GeometricSchedule`, `ConstantSchedule` or
      any object with ``sigma(step)`` and ``num_steps``); or leave None and
      give the following four (defaults: 0.1, 1e-3, 30 levels, 1 step per
      level).
    sigma_max: first noise level (dimensionless convergence); should be at
      least the prior's pixel standard deviation.
    sigma_min: last noise level; well below the posterior standard deviation.
    num_levels: number of geometric noise levels.
    steps_per_level: transitions per noise level.
    num_leapfrog_steps: leapfrog steps per transition (default 3 for 'hmc';
      'mala' and 'ula' use 1).
    step_size_factor: leapfrog step size / σ (dimensionless, in (0, √2):
      leapfrog is unstable on the annealed posterior from √2 on, see
      `AnnealedHamiltonianMonteCarlo`; default 0.5, see
      DEFAULT_STEP_SIZE_FACTOR; about 1 suits an exact prior score).
    method: 'hmc', 'mala' (one leapfrog step with Metropolis correction) or
      'ula' (one leapfrog step, no correction).
    metropolis_correction: bool; default False for 'hmc' (accept every
      proposal), fixed by 'mala' and 'ula'.
    tweedie: whether to denoise the final states at σ_min with the prior
      (``prior.denoise`` if it has one, else x + σ² score).
    initial_state: optional map ``[N, N]`` or ``[num_samples, N, N]`` the
      chains start around (e.g. a Wiener filter map); default zero.
    batch_size: chains per batch (int >= 1); default all at once.
    seed: stateless seed (e.g. ``(1, 2)``), or None for a random one. The
      same seed gives the same samples for the same ``jit_compile`` and
      ``batch_size`` (XLA uses another stateless RNG algorithm).
    jit_compile: compile the sampler with XLA; default True when a GPU is
      visible, else False.
    progress: show a tqdm progress bar.
    divergence_bound: a chain with a pixel |κ| above this (dimensionless)
      at any step has diverged; default 10 (`DEFAULT_DIVERGENCE_BOUND`).
      Must exceed max|initial_state| + 6 σ_max, the reach of the starting
      states.
    pixel_scale_arcmin: pixel side of the data in arcmin, when ``shear`` is
      an array (a ShearMap-like ``shear`` carries its own; giving both with
      different values is an error). None: unknown, not checked.
    allow_pixel_scale_mismatch: Python bool; by default a data pixel scale
      that differs by more than 1 % (`PIXEL_SCALE_TOLERANCE`) from the
      prior's ``pixel_scale_arcmin`` (when both are known) is an error;
      True samples anyway.

  Returns:
    A `PosteriorSamples`.

  Raises:
    ValueError: before sampling, for non-finite shear inside the mask, an
      empty mask, bad noise, shapes that do not match, a prior that does
      not fit N×N maps, data whose dtype differs from the prior's, a pixel
      scale that differs from the prior's, a step_size_factor outside
      (0, √2), or other bad sampler settings.

  Warns:
    RuntimeWarning: when chains diverged, naming how many.
  """
  shear, noise_std, mask, schedule, pixel_scales = _prepare(
      shear, noise_std, mask, prior, schedule, sigma_max, sigma_min,
      num_levels, steps_per_level, pixel_scale_arcmin,
      allow_pixel_scale_mismatch)
  dtype = shear.dtype
  n = shear.shape[0]
  num_leapfrog_steps, metropolis_correction = _method_settings(
      method, num_leapfrog_steps, metropolis_correction)
  num_samples = _checks.positive_int(num_samples, 'num_samples')
  if batch_size is not None:
    batch_size = min(_checks.positive_int(batch_size, 'batch_size'), num_samples)
  else:
    batch_size = num_samples
  start_maps = _initial_state(initial_state, num_samples, n, dtype,
                              'initial_state')
  divergence_bound = _check_divergence_bound(divergence_bound, start_maps,
                                             schedule)
  jit_compile = _default_jit_compile(jit_compile)
  step_size_factor = _checks.positive_scalar(step_size_factor,
                                             'step_size_factor')

  kernel = annealed_hmc.AnnealedHamiltonianMonteCarlo(
      target_score_fn=annealed_posterior_score_fn(shear, noise_std, mask,
                                                  prior),
      schedule=schedule,
      step_size_factor=step_size_factor,
      num_leapfrog_steps=num_leapfrog_steps,
      metropolis_correction=metropolis_correction)
  num_steps = schedule.num_steps
  sigma_start = tf.cast(schedule.sigma(0), dtype)
  sigma_end = tf.cast(schedule.sigma(num_steps - 1), dtype)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def start(maps, seed):
    state = maps + sigma_start * samplers.normal(tf.shape(maps), dtype=dtype,
                                                 seed=seed)
    return state, kernel.bootstrap_results(state)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def advance(state, kernel_results, seed, steps):
    out = sample_lib.sample_chain(
        num_results=1, num_burnin_steps=steps - 1, current_state=state,
        previous_kernel_results=kernel_results, kernel=kernel, trace_fn=None,
        return_final_kernel_results=True, seed=seed)
    return out.all_states[-1], out.final_kernel_results

  @tf.function(jit_compile=jit_compile, autograph=False)
  def finish(state):
    return _tweedie(prior, state, sigma_end)

  seed = samplers.sanitize_seed(seed, salt='sample_posterior')
  batch_starts = list(range(0, num_samples, batch_size))
  batch_seeds = samplers.split_seed(seed, n=len(batch_starts))
  chunks = _chunks(num_steps)
  samples, num_accepted, max_abs, sum_accept = [], [], [], []
  evaluations_per_chain = 0
  began = time.perf_counter()
  with warnings.catch_warnings(), tqdm.tqdm(
      total=len(batch_starts) * num_steps, disable=not progress,
      unit='step', desc='annealed HMC') as bar:
    # Without correction the kernel is not calibrated by design (documented).
    warnings.filterwarnings('ignore', message='supplied `TransitionKernel` is '
                            'not calibrated')
    for first, batch_seed in zip(batch_starts, batch_seeds):
      init_seed, *chunk_seeds = samplers.split_seed(batch_seed,
                                                    n=len(chunks) + 1)
      state, kernel_results = start(
          start_maps[first:first + batch_size], init_seed)
      for steps, chunk_seed in zip(chunks, chunk_seeds):
        state, kernel_results = advance(state, kernel_results, chunk_seed,
                                        steps)
        bar.update(steps)
      if tweedie:
        state = finish(state)
      samples.append(state)
      num_accepted.append(kernel_results.num_accepted)
      max_abs.append(kernel_results.max_abs_state)
      sum_accept.append(kernel_results.sum_accept_probability)
      evaluations_per_chain = (int(kernel_results.num_score_evaluations) +
                               int(tweedie))
  wall_time = time.perf_counter() - began

  samples = tf.concat(samples, axis=0)
  acceptance = float(tf.reduce_mean(
      tf.cast(tf.concat(num_accepted, axis=0), tf.float64)) / num_steps)
  max_abs = tf.concat(max_abs, axis=0).numpy().astype(np.float64)
  finite_samples = np.all(np.isfinite(samples.numpy()), axis=(1, 2))
  diverged = np.flatnonzero(~(max_abs <= divergence_bound) | ~finite_samples)
  if metropolis_correction or num_leapfrog_steps > 1:
    would_be = (tf.concat(sum_accept, axis=0).numpy().astype(np.float64) /
                num_steps).tolist()
  else:  # No part of a one-step trajectory is at a single noise level.
    would_be = None
  diagnostics = dict(
      acceptance_rate=acceptance,
      score_evaluations_per_sample=evaluations_per_chain,
      num_score_evaluations=evaluations_per_chain * num_samples,
      wall_time_s=wall_time,
      wall_time_per_sample_s=wall_time / num_samples,
      schedule=schedule,
      num_steps=num_steps,
      method=method,
      num_leapfrog_steps=num_leapfrog_steps,
      step_size_factor=step_size_factor,
      metropolis_correction=metropolis_correction,
      tweedie=bool(tweedie),
      batch_size=batch_size,
      jit_compile=jit_compile,
      divergence_bound=divergence_bound,
      **pixel_scales,
      num_diverged_chains=len(diverged),
      diverged_chains=diverged.tolist(),
      max_abs_kappa=[float(v) if np.isfinite(v) else None for v in max_abs],
      num_dropped_chains=0,
      dropped_chains=[],
      would_be_acceptance=would_be,
      **_acceptance_summary(would_be))
  if len(diverged):
    warnings.warn(
        f'{len(diverged)} of {num_samples} chains diverged (a state with NaN, '
        f'inf or |kappa| > {divergence_bound:g}; indices in '
        "diagnostics['diverged_chains']): their samples are junk and spoil "
        'the mean, std and intervals. Use a smaller step_size_factor (now '
        f'{step_size_factor:g}) or check the prior; '
        'PosteriorSamples.drop_diverged() removes them.', RuntimeWarning)
  return _summarise(samples, diagnostics)


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


def credible_interval(samples, level):
  """Central per-pixel credible interval from S independent samples.

  The bounds are the (1 ± level)/2 quantiles of the samples at the plotting
  positions q·(S + 1) of the sorted samples (linear interpolation between
  order statistics). With these positions a further draw from the same
  distribution falls inside the interval with probability ``level`` on
  average, for any S: the usual positions q·(S − 1) give intervals that are
  too narrow for small S (with 16 samples the "68 %" and "95 %" intervals
  cover about 60 % and 84 %). Positions outside [1, S] are clipped to the
  extreme samples, so a 95 % interval needs S ≥ 39; with fewer samples it
  is [min, max], which covers (S − 1)/(S + 1), and a warning says so.

  Args:
    samples: ``[S, ...]`` float tensor, S ≥ 2 samples along axis 0.
    level: credible level in (0, 1), e.g. 0.68.

  Returns:
    ``[2, ...]`` lower and upper bounds, same dtype as the samples.
  """
  samples = tf.convert_to_tensor(samples)
  num = int(samples.shape[0])
  if num < 2:
    raise ValueError(f'need at least 2 samples for a credible interval, got {num}.')
  if not 0. < level < 1.:
    raise ValueError(f'level must be in (0, 1), got {level!r}.')
  tail = 0.5 * (1. - level)
  if tail * (num + 1) < 1.:
    warnings.warn(f'{num} samples cannot resolve a {level:.0%} interval (needs '
                  f'{math.ceil(1. / tail) - 1}); using [min, max], which '
                  f'covers {(num - 1) / (num + 1):.0%} on average.')
  ordered = tf.sort(samples, axis=0)
  bounds = []
  for q in (tail, 1. - tail):
    position = min(max(q * (num + 1), 1.), float(num)) - 1.  # 0-based.
    below = int(math.floor(position))
    above = min(below + 1, num - 1)
    weight = tf.cast(position - below, samples.dtype)
    bounds.append(ordered[below] + weight * (ordered[above] - ordered[below]))
  return tf.stack(bounds)


def map_estimate(shear,
                 noise_std=None,
                 mask=None,
                 prior=None,
                 schedule=None,
                 sigma_max=None,
                 sigma_min=None,
                 num_levels=None,
                 steps_per_level=None,
                 step_size_factor=0.5,
                 initial_state=None,
                 jit_compile=None,
                 *,
                 pixel_scale_arcmin=None,
                 allow_pixel_scale_mismatch=False):
  """Maximum a posteriori map by annealed score ascent.

  Deterministic gradient ascent on the annealed posterior,
  x ← x + η_k ∇log p_σk(x | γ) with η_k = step_size_factor · σ_k², while
  the schedule lowers σ_k (default: the geometric schedule of
  `sample_posterior`). The annealed posterior's curvature is at most 2/σ²
  (see `AnnealedHamiltonianMonteCarlo`) and the ascent multiplies a
  direction of curvature c by 1 − η c, so it is stable for η · 2/σ² < 2,
  i.e. ``step_size_factor < 1``. Large σ smooths away local maxima of a
  non-Gaussian prior; the result maximises p_σmin(κ | γ). For a Gaussian
  prior it converges to the Wiener filter.

  Args:
    shear, noise_std, mask, prior, schedule, sigma_max, sigma_min,
      num_levels, steps_per_level: as in `sample_posterior`.
    step_size_factor: η / σ² (dimensionless, in (0, 1)).
    initial_state: optional starting map ``[N, N]``; default zero.
    jit_compile: compile with XLA; default True when a GPU is visible.
    pixel_scale_arcmin, allow_pixel_scale_mismatch: as in
      `sample_posterior`.

  Returns:
    (kappa, info): the MAP map ``[N, N]`` and a dict with
    ``num_score_evaluations``, ``wall_time_s``, and the data's
    ``pixel_scale_arcmin`` and ``prior_pixel_scale_arcmin`` (None where
    unknown).

  Raises:
    ValueError: as `sample_posterior`, or a step_size_factor outside (0, 1).
  """
  shear, noise_std, mask, schedule, pixel_scales = _prepare(
      shear, noise_std, mask, prior, schedule, sigma_max, sigma_min,
      num_levels, steps_per_level, pixel_scale_arcmin,
      allow_pixel_scale_mismatch)
  dtype = shear.dtype
  n = shear.shape[0]
  factor = _checks.positive_scalar(step_size_factor, 'step_size_factor')
  if factor >= 1:
    raise ValueError(f'step_size_factor must be in (0, 1), where the ascent '
                     'is stable on the annealed posterior (curvature <= '
                     f'2/sigma²), got {step_size_factor!r}.')
  x0 = _initial_state(initial_state, 1, n, dtype, 'initial_state')
  score_fn = annealed_posterior_score_fn(shear, noise_std, mask, prior)
  num_steps = schedule.num_steps

  @tf.function(jit_compile=_default_jit_compile(jit_compile), autograph=False)
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

r"""The exact posterior of a lognormal convergence field, sampled by TFP's HMC.

Model. The prior is the shifted lognormal field of `lognormal.LognormalField`,
κ = λ (exp(g − σ_g²/2) − 1) with g = S_g^{1/2} z a Gaussian field of known
spectrum and z a white standard-normal map (KaRMMa, Fiedorowicz et al. 2022,
MNRAS 512, 73, do the same on the sphere). The data model is
`likelihood.ShearLikelihood`: e = Aκ(z) + n, Gaussian per pixel and channel,
masked pixels carrying no information, and A any operator the likelihood
takes (the shear operator by default, the identity for pure denoising). So

    log p(z | e) = log p(e | κ(z)) − ½ ‖z‖² + const

is known exactly, and Hamiltonian Monte Carlo on z samples the exact
posterior: on lognormal fields its mean is the Bayes-optimal (minimum mean
squared error) estimate, the limit any learned prior can only approach. With
``field.shift = None`` (the Gaussian field) the posterior is the Gaussian one
of `wiener.wiener_filter`, which the sampler reproduces.

Preconditioning. HMC runs in z (identity mass matrix) by default. With
``preconditioner=True`` it runs on w = M^{1/2} z instead, i.e. in z with the
Fourier-diagonal mass matrix M = F⁻¹ diag(m) F of the linearised posterior
precision,

    m_k = 1 + J² P_g(k) Σ_c w̄_c |Â_c(k)|²,

with P_g the latent eigenvalues, Â_c(k) the Fourier transfer function of
channel c of the operator (cos 2φ and sin 2φ for shear, 1 for the
identity), w̄_c the inverse noise variance averaged over all pixels (0 off
the mask), and J² = E[(κ + λ)²] = λ² + σ_κ² the prior mean square of dκ/dg
(1 for the Gaussian field). Either way the sampled distribution is exact (a
linear change of variables); only the speed differs. M is right when the
data cover the map with near-uniform noise and the noise is low (m_k ≫ 1
for many modes, where plain HMC needs tiny steps). With a survey mask it is
not: large-scale modes of the unobserved area keep their prior scale in z,
so in w they are √m_k times wider than M assumes. At the demo setting
(COSMOS mask, 64 galaxies/arcmin², 128² pixels of 0.8 arcmin, m_k ≤ 40 and
m_k > 2 for 3 % of the modes) the step size is set by the dimension
(≈ d^{-1/4}) rather than by the stiffest mode: the preconditioner left the
median pixel's effective sample size unchanged and cut that of the map mean
1.5-fold and of the largest-scale Fourier mode 2.6-fold (docs/benchmarks.md),
hence the default.

Step size. `tfp.mcmc.DualAveragingStepSizeAdaptation` adapts one step size
per map during warm-up (all chains of a map share it), for the mean
acceptance probability ``target_accept_prob``. Each transition multiplies it
by an independent uniform factor in [1 − j, 1 + j] per chain
(``step_size_jitter``): where most modes have the same posterior scale (the
prior-dominated ones in z, all of them in w when M is right) they share one
frequency, and a fixed trajectory length near a multiple of π would leave
them (nearly) unmoved; a random step size is still a valid HMC kernel (a
mixture of reversible kernels).

Estimates. After warm-up, the mean and standard deviation of κ per pixel
are streamed over every transition of every chain
(`tfp.experimental.mcmc.WithReductions`); every
``num_steps_between_results + 1``-th state is kept as a sample, and the
credible intervals, split R-hat and effective sample size
(`tfp.mcmc.potential_scale_reduction`, `tfp.mcmc.effective_sample_size`) are
computed from those. Shear, convergence and noise are dimensionless.
"""

import collections
import math
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tqdm

from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.mcmc import kernel as kernel_base
from tensorflow_probability.python.mcmc import simple_step_size_adaptation
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_massmap import _checks
from tfp_massmap import lensing
from tfp_massmap import likelihood as likelihood_lib
from tfp_massmap import lognormal

__all__ = [
    'LognormalPosteriorSamples',
    'lognormal_posterior',
]

# Transitions per call of a compiled sampler (one progress-bar update each;
# chunk lengths are tensors, so each sampler is traced once).
_MAX_CHUNK_STEPS = 50
_COMPLEX = {tf.float32: tf.complex64, tf.float64: tf.complex128}
_get_step_size = simple_step_size_adaptation.hmc_like_step_size_getter_fn
_set_step_size = simple_step_size_adaptation.hmc_like_step_size_setter_fn


class LognormalPosteriorSamples(
    collections.namedtuple('LognormalPosteriorSamples', [
        'samples', 'mean', 'std', 'interval_68', 'interval_95',
        'diagnostics'])):
  """Posterior samples of convergence maps and their per-pixel summaries.

  The fields are those of `posterior.PosteriorSamples`; ``[...]`` below is
  the batch shape of the data (empty for one map).

  Attributes:
    samples: ``[num_results * num_chains, ..., N, N]`` kept MCMC states,
      result-major (reshape to ``[num_results, num_chains, ..., N, N]`` for
      chain-wise work); dimensionless convergence. Successive samples of a
      chain are correlated: see the effective sample sizes.
    mean: ``[..., N, N]`` posterior mean, averaged over every post-warm-up
      transition of every chain.
    std: ``[..., N, N]`` posterior standard deviation, likewise.
    interval_68: ``[2, ..., N, N]`` lower and upper bounds of the central
      68 % per-pixel credible interval (16th and 84th percentiles of
      ``samples``).
    interval_95: ``[2, ..., N, N]``, the same for 95 % (2.5th and 97.5th).
    diagnostics: `dict`. Per map (numpy arrays of the batch shape, floats for
      one map): ``acceptance_rate`` (mean over post-warm-up transitions and
      chains), ``step_size`` (adapted step size in w, before jitter),
      ``r_hat_max`` and ``r_hat_median`` (split R-hat of κ over pixels),
      ``ess_min`` and ``ess_median`` (effective sample size of κ over
      pixels, all chains together, in kept samples),
      ``ess_target_log_prob`` (of the log posterior at the kept states).
      Totals: ``gradient_evaluations_per_chain``, ``gradient_evaluations``
      (over all chains and maps), ``wall_time_s``, ``warmup_wall_time_s``,
      ``sampling_wall_time_s`` (seconds, compilation included), and the
      settings used.
  """
  __slots__ = ()


class _JitteredStepSizeResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple('_JitteredStepSizeResults',
                           ['inner_results', 'step_size'])):
  """Inner HMC results and the step size before jitter."""
  __slots__ = ()


class _JitteredStepSize(kernel_base.TransitionKernel):
  """HMC whose step size is multiplied by U(1 − j, 1 + j) per transition.

  The factor is drawn independently per chain (the state's leading axes);
  ``step_size`` in the results is the un-jittered step, which a step-size
  adaptation kernel reads and sets (see ``_adaptation_fns``).
  """

  def __init__(self, inner_kernel, jitter, name=None):
    self._parameters = dict(inner_kernel=inner_kernel, jitter=jitter,
                            name=name or 'jittered_step_size')

  @property
  def inner_kernel(self):
    return self._parameters['inner_kernel']

  @property
  def jitter(self):
    return self._parameters['jitter']

  @property
  def name(self):
    return self._parameters['name']

  @property
  def parameters(self):
    return self._parameters

  @property
  def is_calibrated(self):
    return self.inner_kernel.is_calibrated

  def one_step(self, current_state, previous_kernel_results, seed=None):
    with tf.name_scope(mcmc_util.make_name(self.name, 'jittered_step_size',
                                           'one_step')):
      jitter_seed, inner_seed = samplers.split_seed(seed, n=2)
      step_size = previous_kernel_results.step_size
      shape = ps.concat([ps.shape(current_state)[:-2], [1, 1]], axis=0)
      jitter = tf.constant(self.jitter, step_size.dtype)
      factor = samplers.uniform(shape, minval=1. - jitter, maxval=1. + jitter,
                                dtype=step_size.dtype, seed=jitter_seed)
      inner_results = _set_step_size(previous_kernel_results.inner_results,
                                     step_size * factor)
      new_state, inner_results = self.inner_kernel.one_step(
          current_state, inner_results, seed=inner_seed)
      # Store the un-jittered step, keeping the results' shapes fixed.
      inner_results = inner_results._replace(
          accepted_results=inner_results.accepted_results._replace(
              step_size=step_size),
          proposed_results=inner_results.proposed_results._replace(
              step_size=step_size))
      return new_state, _JitteredStepSizeResults(inner_results, step_size)

  def bootstrap_results(self, init_state):
    with tf.name_scope(mcmc_util.make_name(self.name, 'jittered_step_size',
                                           'bootstrap_results')):
      inner_results = self.inner_kernel.bootstrap_results(init_state)
      return _JitteredStepSizeResults(
          inner_results, tf.convert_to_tensor(_get_step_size(inner_results)))


def _adaptation_fns():
  """Step-size setter, getter and log-acceptance getter for the wrapper."""
  return dict(
      step_size_setter_fn=lambda results, s: results._replace(step_size=s),
      step_size_getter_fn=lambda results: results.step_size,
      log_accept_prob_getter_fn=lambda results: tf.minimum(
          tf.zeros([], results.inner_results.log_accept_ratio.dtype),
          results.inner_results.log_accept_ratio))


def _prepare_data(shear, noise_std, mask, n, channels, dtype):
  """Validates the data; numpy arrays with safe values off the mask.

  Returns (shear [..., N, N, C], noise_std [..., N, N, C], mask [..., N, N],
  batch shape). The mask may be empty (then the posterior is the prior).
  """
  np_dtype = dtype.as_numpy_dtype
  shear = np.asarray(shear, np_dtype)
  _checks.square_map_shape(shear.shape, 'shear', channels=channels)
  if shear.shape[-2] != n:
    raise ValueError(f'shear must have shape [..., {n}, {n}, {channels}] (the '
                     f"field's map_size and the operator's channels), got "
                     f'{shear.shape}.')
  noise_std = np.asarray(noise_std, np_dtype)
  if noise_std.ndim >= 2 and noise_std.shape[-2:] == (n, n):
    noise_std = noise_std[..., np.newaxis]
  elif not (noise_std.ndim >= 3 and noise_std.shape[-3:] == (n, n, channels)):
    raise ValueError(f'noise_std must have shape [..., {n}, {n}] or [..., {n}, '
                     f'{n}, {channels}], got {noise_std.shape}.')
  if mask is None:
    mask = np.ones([n, n], np_dtype)
  mask = np.asarray(mask)
  if mask.ndim < 2 or mask.shape[-2:] != (n, n):
    raise ValueError(f'mask must have shape [..., {n}, {n}], got {mask.shape}.')
  _checks.non_negative(mask.astype(np.float64), 'mask')
  try:
    batch_shape = np.broadcast_shapes(shear.shape[:-3], noise_std.shape[:-3],
                                      mask.shape[:-2])
  except ValueError:
    raise ValueError(
        'the leading (batch) axes of shear, noise_std and mask must '
        f'broadcast; got shear {shear.shape}, noise_std {noise_std.shape}, '
        f'mask {mask.shape}.') from None
  observed = np.broadcast_to(mask > 0, batch_shape + (n, n))[..., np.newaxis]
  shear = np.broadcast_to(shear, batch_shape + (n, n, channels))
  noise_std = np.broadcast_to(noise_std, batch_shape + (n, n, channels))
  bad = observed & ~np.isfinite(shear)
  if bad.any():
    raise ValueError(f'shear holds {int(bad.sum())} non-finite value(s) (NaN '
                     'or inf) on observed pixels (mask > 0); expected finite '
                     'values there.')
  bad = observed & ~(np.isfinite(noise_std) & (noise_std > 0))
  if bad.any():
    first = noise_std[np.broadcast_to(bad, noise_std.shape)].ravel()[0]
    raise ValueError(f'noise_std holds {int(bad.sum())} value(s) that are not '
                     f'finite and > 0 on observed pixels (mask > 0) (first: '
                     f'{first!r}).')
  shear = np.where(observed, shear, 0).astype(np_dtype)
  noise_std = np.where(observed, noise_std, 1).astype(np_dtype)
  mask = observed[..., 0].astype(np_dtype)
  return shear, noise_std, mask, batch_shape


def _operator_power(operator, n, dtype):
  """|Â_c(k)|² ``[N, N, C]``: the squared Fourier transfer of each channel.

  Read from the response to a unit impulse at pixel (0, 0); exact for any
  operator that is a periodic convolution (shear, identity, smoothing).
  """
  impulse = np.zeros([n, n], dtype.as_numpy_dtype)
  impulse[0, 0] = 1.
  response = tf.convert_to_tensor(operator(tf.constant(impulse)))
  response = tf.transpose(response, [2, 0, 1])
  transfer = tf.signal.fft2d(tf.cast(response, _COMPLEX[dtype]))
  power = tf.transpose(tf.math.real(transfer * tf.math.conj(transfer)),
                       [1, 2, 0]).numpy().astype(np.float64)
  # Symmetrise under k -> -k (exact for real operators, up to rounding).
  mirror = np.roll(np.flip(power, axis=(0, 1)), 1, axis=(0, 1))
  return 0.5 * (power + mirror)


def _preconditioner(field, operator, noise_std, mask, enabled):
  """The mass-matrix eigenvalues m ``[..., N, N]`` (float64 numpy)."""
  n = field.map_size
  batch_shape = mask.shape[:-2]
  if not enabled:
    return np.ones(batch_shape + (n, n))
  power = _operator_power(operator, n, field.dtype)
  inverse_variance = mask[..., np.newaxis] / noise_std.astype(np.float64)**2
  mean_inverse = inverse_variance.mean(axis=(-3, -2))  # [..., C]
  data = np.einsum('...c,ijc->...ij', mean_inverse, power)
  jacobian_sq = 1. if field.shift is None else field.shift**2 + field.variance
  latent = field.latent_power_grid.numpy().astype(np.float64)
  return 1. + jacobian_sq * latent * data


def _default_jit_compile(jit_compile):
  if jit_compile is None:
    return bool(tf.config.list_physical_devices('GPU'))
  return bool(jit_compile)


def _chunks(num_steps, unit=1):
  """Splits num_steps (a multiple of unit) into at most two chunk lengths."""
  units = num_steps // unit
  per_chunk = max(1, _MAX_CHUNK_STEPS // unit)
  num_chunks = math.ceil(units / per_chunk)
  size = math.ceil(units / num_chunks)
  sizes = [size] * (num_chunks - 1) + [units - size * (num_chunks - 1)]
  return [s * unit for s in sizes]


def _per_map(x):
  """A numpy array of the batch shape, or a float for one map."""
  x = np.asarray(x)
  return float(x) if x.ndim == 0 else x


def lognormal_posterior(shear,
                        noise_std=None,
                        mask=None,
                        field=None,
                        num_chains=4,
                        num_results=200,
                        num_burnin_steps=300,
                        num_leapfrog_steps=12,
                        num_steps_between_results=4,
                        target_accept_prob=0.75,
                        step_size_jitter=0.2,
                        preconditioner=False,
                        operator=None,
                        seed=None,
                        jit_compile=None,
                        progress=True):
  """Samples the exact posterior of κ under a lognormal-field prior.

  HMC (`tfp.mcmc.HamiltonianMonteCarlo`) on the whitened, preconditioned
  latent map (module docstring), ``num_chains`` chains per map run as one
  batch, all maps of a batch of data together. Each chain starts from an
  independent prior draw, adapts its map's step size for
  ``num_burnin_steps`` transitions
  (`tfp.mcmc.DualAveragingStepSizeAdaptation`), then runs
  ``num_results * (num_steps_between_results + 1)`` transitions at the
  adapted (jittered) step size, in chunks of at most 50 transitions (one
  progress-bar update each).

  Args:
    shear: observed data ``[..., N, N, C]`` (dimensionless; C = 2 for the
      default shear operator, the operator's channel count otherwise), or a
      ShearMap-like object with attributes ``shear``, ``noise_std`` and
      ``mask`` (then leave ``noise_std`` and ``mask`` None). Values off the
      mask are ignored.
    noise_std: noise standard deviation per pixel, ``[..., N, N]`` or
      ``[..., N, N, C]``; finite and > 0 on observed pixels.
    mask: ``[..., N, N]``, nonzero where the pixel has data; default: all
      pixels. An all-zero mask is allowed: the posterior is then the prior.
    field: the prior, a `lognormal.LognormalField` with ``map_size`` N (its
      ``shift`` None gives the Gaussian field); its dtype is the dtype of
      the computation and of the results.
    num_chains: chains per map (int >= 1; >= 2 for cross-chain R-hat).
    num_results: kept samples per chain (int >= 4).
    num_burnin_steps: warm-up transitions with step-size adaptation (>= 1).
    num_leapfrog_steps: leapfrog steps per transition (>= 1).
    num_steps_between_results: transitions between kept samples (thinning,
      >= 0); mean and std use every transition regardless.
    target_accept_prob: mean acceptance probability the adaptation aims at,
      in (0, 1).
    step_size_jitter: j in [0, 1): each transition's step size is the
      adapted one times U(1 − j, 1 + j).
    preconditioner: use the Fourier-diagonal mass matrix of the module
      docstring (True; for unmasked, low-noise data) or the identity in z
      (False).
    operator: forward model for `ShearLikelihood` (``[..., N, N]`` →
      ``[..., N, N, C]``); default the shear operator;
      `likelihood.identity_operator` makes this the exact MMSE denoiser.
    seed: stateless seed (e.g. ``(1, 2)``), or None for a random one.
    jit_compile: compile with XLA; default True when a GPU is visible.
    progress: show a tqdm progress bar.

  Returns:
    A `LognormalPosteriorSamples`.

  Raises:
    ValueError: for a missing or mismatched field, shapes that do not match
      or broadcast, non-finite data or non-positive noise on observed pixels,
      a negative mask, or bad sampler settings.
  """
  if not isinstance(field, lognormal.LognormalField):
    raise ValueError('field must be a tfp_massmap.LognormalField (the prior), '
                     f'got {type(field).__name__}.')
  num_chains = _checks.positive_int(num_chains, 'num_chains')
  num_results = _checks.positive_int(num_results, 'num_results', minimum=4)
  num_burnin_steps = _checks.positive_int(num_burnin_steps, 'num_burnin_steps')
  num_leapfrog_steps = _checks.positive_int(num_leapfrog_steps, 'num_leapfrog_steps')
  thinning = _checks.positive_int(num_steps_between_results,
                           'num_steps_between_results', minimum=0) + 1
  target_accept_prob = float(target_accept_prob)
  if not 0. < target_accept_prob < 1.:
    raise ValueError('target_accept_prob must be in (0, 1), got '
                     f'{target_accept_prob!r}.')
  step_size_jitter = float(step_size_jitter)
  if not 0. <= step_size_jitter < 1.:
    raise ValueError('step_size_jitter must be in [0, 1), got '
                     f'{step_size_jitter!r}.')
  if operator is None:
    operator = lensing.shear_from_convergence
  if not callable(operator):
    raise ValueError('operator must be a callable mapping convergence '
                     f'[..., N, N] to [..., N, N, C], got {operator!r}.')

  dtype = field.dtype
  n = field.map_size
  channels = likelihood_lib.ShearLikelihood(
      tf.zeros([n, n], dtype), tf.ones([n, n], dtype),
      operator=operator).event_shape[-1]
  shear, noise_std, mask = _checks.unpack_shear_data(shear, noise_std, mask)
  shear, noise_std, mask, batch_shape = _prepare_data(
      shear, noise_std, mask, n, channels, dtype)
  jit_compile = _default_jit_compile(jit_compile)

  # Fourier-space constants on the rfft half-plane: g = irfft(a · rfft(w)),
  # ‖z‖² = Σ_half weight · |rfft(w)|² (Parseval, half-plane multiplicity).
  mass = _preconditioner(field, operator, noise_std, mask, preconditioner)
  latent = field.latent_power_grid.numpy().astype(np.float64)
  half = n // 2 + 1
  multiplicity = np.full(half, 2.)
  multiplicity[0] = 1.
  if n % 2 == 0:
    multiplicity[-1] = 1.
  amplitude = tf.constant(np.sqrt(latent / mass)[..., :half],
                          _COMPLEX[dtype])
  prior_weight = tf.constant(multiplicity / (mass[..., :half] * n * n),
                             dtype)
  sqrt_mass = tf.constant(np.sqrt(mass)[..., :half], _COMPLEX[dtype])
  shear_t = tf.constant(shear)
  noise_t = tf.constant(noise_std)
  mask_t = tf.constant(mask)

  def convergence(w):
    latent_map = tf.signal.irfft2d(amplitude * tf.signal.rfft2d(w),
                                   fft_length=[n, n])
    return field.convergence_from_latent(latent_map)

  def target_log_prob_fn(w):
    spectrum = tf.signal.rfft2d(w)
    latent_map = tf.signal.irfft2d(amplitude * spectrum, fft_length=[n, n])
    kappa = field.convergence_from_latent(latent_map)
    log_prior = -0.5 * tf.reduce_sum(
        prior_weight * tf.math.real(spectrum * tf.math.conj(spectrum)),
        axis=[-2, -1])
    log_likelihood = likelihood_lib.ShearLikelihood(
        kappa, noise_t, mask_t, operator=operator).log_prob(shear_t)
    return log_likelihood + log_prior

  state_shape = [num_chains, *batch_shape, n, n]
  step_shape = [*batch_shape, 1, 1]
  initial_step = float(n)**-0.5

  def hmc(step_size):
    return _JitteredStepSize(
        tfp.mcmc.HamiltonianMonteCarlo(
            target_log_prob_fn, step_size=step_size,
            num_leapfrog_steps=num_leapfrog_steps,
            store_parameters_in_results=True),
        jitter=step_size_jitter)

  adaptive_kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
      hmc(tf.fill(step_shape, tf.constant(initial_step, dtype))),
      num_adaptation_steps=num_burnin_steps,
      target_accept_prob=tf.constant(target_accept_prob, dtype),
      **_adaptation_fns())

  # Streams E[κ], E[κ²] and the acceptance over every transition.
  reducer = tfp.experimental.mcmc.ExpectationsReducer(transform_fn=dict(
      kappa=lambda w, unused_results: convergence(w),
      kappa_squared=lambda w, unused_results: tf.square(convergence(w)),
      accepted=lambda unused_w, results: tf.cast(
          results.inner_results.is_accepted, dtype)))

  def sampling_kernel(step_size):
    return tfp.experimental.mcmc.WithReductions(hmc(step_size), reducer)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def start(seed):
    # A prior draw z ~ N(0, I) is w = M^{1/2} z.
    white = samplers.normal(state_shape, dtype=dtype, seed=seed)
    w = tf.signal.irfft2d(sqrt_mass * tf.signal.rfft2d(white),
                          fft_length=[n, n])
    return w, adaptive_kernel.bootstrap_results(w)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def warm_up(state, results, seed, steps):
    out = tfp.mcmc.sample_chain(
        num_results=1, num_burnin_steps=steps - 1, current_state=state,
        previous_kernel_results=results, kernel=adaptive_kernel,
        trace_fn=None, return_final_kernel_results=True, seed=seed)
    return out.all_states[-1], out.final_kernel_results

  @tf.function(jit_compile=jit_compile, autograph=False)
  def begin_sampling(state, step_size):
    return sampling_kernel(step_size).bootstrap_results(state)

  @tf.function(jit_compile=jit_compile, autograph=False)
  def sample(state, results, seed, kept):
    kernel = sampling_kernel(results.inner_results.step_size)
    out = tfp.mcmc.sample_chain(
        num_results=kept, num_steps_between_results=thinning - 1,
        current_state=state, previous_kernel_results=results, kernel=kernel,
        trace_fn=lambda w, r: (convergence(w), r.inner_results.inner_results.
                               accepted_results.target_log_prob),
        return_final_kernel_results=True, seed=seed)
    return out.all_states[-1], out.final_kernel_results, out.trace

  seed = samplers.sanitize_seed(seed, salt='lognormal_posterior')
  start_seed, warm_seed, sample_seed = samplers.split_seed(seed, n=3)
  warm_chunks = _chunks(num_burnin_steps)
  sample_chunks = _chunks(num_results * thinning, unit=thinning)
  began = time.perf_counter()
  kept_kappa, kept_log_prob = [], []
  with tqdm.tqdm(total=num_burnin_steps + num_results * thinning,
                 disable=not progress, unit='step',
                 desc='lognormal posterior HMC') as bar:
    state, results = start(start_seed)
    for steps, chunk_seed in zip(
        warm_chunks, samplers.split_seed(warm_seed, n=len(warm_chunks))):
      state, results = warm_up(state, results, chunk_seed, tf.constant(steps))
      bar.update(steps)
    # After adaptation the kernel's step size is the dual-averaging average.
    step_size = results.new_step_size
    warmed = time.perf_counter()
    results = begin_sampling(state, step_size)
    for steps, chunk_seed in zip(
        sample_chunks, samplers.split_seed(sample_seed, n=len(sample_chunks))):
      state, results, (kappa, log_prob) = sample(
          state, results, chunk_seed, tf.constant(steps // thinning))
      kept_kappa.append(kappa)
      kept_log_prob.append(log_prob)
      bar.update(steps)
  finished = time.perf_counter()

  kept_kappa = tf.concat(kept_kappa, axis=0)  # [R, C, ..., N, N]
  kept_log_prob = tf.concat(kept_log_prob, axis=0)  # [R, C, ...]
  moments = reducer.finalize(results.reduction_results)
  mean = moments['kappa']  # [C, ..., N, N]
  chain_mean = lambda x: tf.reduce_mean(x, axis=0)
  cross_chain_dims = 1 if num_chains > 1 else None

  def total_ess(x):
    ess = tfp.mcmc.effective_sample_size(
        x, filter_beyond_positive_pairs=True, cross_chain_dims=cross_chain_dims)
    return ess if num_chains > 1 else tf.reduce_sum(ess, axis=0)

  ess = total_ess(kept_kappa)
  r_hat = tfp.mcmc.potential_scale_reduction(
      kept_kappa, independent_chain_ndims=1, split_chains=True)
  pixels = lambda x: tf.reshape(x, [*batch_shape, n * n])
  per_chain = (1 + num_burnin_steps * num_leapfrog_steps) + (
      1 + num_results * thinning * num_leapfrog_steps)
  num_maps = int(np.prod(batch_shape, dtype=np.int64))
  diagnostics = dict(
      acceptance_rate=_per_map(chain_mean(moments['accepted'])),
      step_size=_per_map(tf.reshape(step_size, batch_shape)),
      r_hat_max=_per_map(tf.reduce_max(pixels(r_hat), axis=-1)),
      r_hat_median=_per_map(tfp.stats.percentile(pixels(r_hat), 50., axis=-1)),
      ess_min=_per_map(tf.reduce_min(pixels(ess), axis=-1)),
      ess_median=_per_map(tfp.stats.percentile(pixels(ess), 50., axis=-1)),
      ess_target_log_prob=_per_map(total_ess(kept_log_prob)),
      gradient_evaluations_per_chain=per_chain,
      gradient_evaluations=per_chain * num_chains * num_maps,
      wall_time_s=finished - began,
      warmup_wall_time_s=warmed - began,
      sampling_wall_time_s=finished - warmed,
      num_chains=num_chains,
      num_results=num_results,
      num_burnin_steps=num_burnin_steps,
      num_leapfrog_steps=num_leapfrog_steps,
      num_steps_between_results=thinning - 1,
      target_accept_prob=target_accept_prob,
      step_size_jitter=step_size_jitter,
      preconditioner=bool(preconditioner),
      jit_compile=jit_compile)

  samples = tf.reshape(kept_kappa, [-1, *batch_shape, n, n])
  q = tfp.stats.percentile(samples, tf.constant([2.5, 16., 84., 97.5], dtype),
                           axis=0, interpolation='linear')
  return LognormalPosteriorSamples(
      samples=samples,
      mean=chain_mean(mean),
      std=tf.sqrt(tf.nn.relu(chain_mean(moments['kappa_squared']) -
                             tf.square(chain_mean(mean)))),
      interval_68=tf.stack([q[1], q[2]]),
      interval_95=tf.stack([q[0], q[3]]),
      diagnostics=diagnostics)

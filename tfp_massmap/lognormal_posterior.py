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

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import unnest

from tfp_massmap import _checks
from tfp_massmap import lensing
from tfp_massmap import likelihood as likelihood_lib
from tfp_massmap import lognormal
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap.mcmc import driver
from tfp_massmap.mcmc import jittered_step_size
from tfp_massmap.mcmc import results as results_lib

__all__ = [
    'lognormal_posterior',
]

# Transitions per call of a compiled sampler (one progress-bar update each;
# chunk lengths are tensors, so each sampler is traced once).
_MAX_CHUNK_STEPS = 50
_COMPLEX = {tf.float32: tf.complex64, tf.float64: tf.complex128}


def _prepare_data(shear, noise_std, mask, n, channels, dtype):
  """Validates the data (`as_shear_map`, in ``dtype``); numpy arrays.

  Returns (shear [..., N, N, C], noise_std [..., N, N, C], mask [..., N, N],
  batch shape). The mask may be empty (then the posterior is the prior).
  """
  if all(hasattr(shear, a) for a in ('shear', 'noise_std', 'mask')):
    given = shear.shear
  else:  # Arrays are converted to the field's dtype, as a ShearMap is.
    given = shear = np.asarray(shear, dtype.as_numpy_dtype)
    if noise_std is not None:
      noise_std = np.asarray(noise_std, dtype.as_numpy_dtype)
  if _checks.square_map_shape(np.shape(given), 'shear', channels) != n:
    raise ValueError(f'shear must have shape [..., {n}, {n}, {channels}] (the '
                     f"field's map_size and the operator's channels), got "
                     f'{np.shape(given)}.')
  data = shear_map_lib.as_shear_map(shear, noise_std, mask, dtype=dtype,
                                    channels=channels, allow_empty_mask=True)
  shear = data.shear.numpy()
  noise_std = data.noise_std.numpy()
  if noise_std.shape[-2:] == (n, n):
    noise_std = noise_std[..., np.newaxis]
  mask = data.mask.numpy()
  batch_shape = np.broadcast_shapes(shear.shape[:-3], noise_std.shape[:-3],
                                    mask.shape[:-2])
  return (np.broadcast_to(shear, batch_shape + (n, n, channels)),
          np.broadcast_to(noise_std, batch_shape + (n, n, channels)),
          np.broadcast_to(mask, batch_shape + (n, n)), batch_shape)


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


def _per_map(x):
  """A numpy array of the batch shape, or a float for one map."""
  x = np.asarray(x)
  return float(x) if x.ndim == 0 else x


def lognormal_posterior(shear,
                        noise_std=None,
                        mask=None,
                        field=None,
                        *,
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
  adapted (jittered) step size (`tfp_massmap.mcmc.JitteredStepSize`), in
  chunks of at most 50 transitions (one progress-bar update each,
  `tfp_massmap.mcmc.driver`).

  Args:
    shear: observed data ``[..., N, N, C]`` (dimensionless; C = 2 for the
      default shear operator, the operator's channel count otherwise), or a
      `tfp_massmap.ShearMap` (then leave ``noise_std`` and ``mask`` None);
      checked by `tfp_massmap.as_shear_map` in the field's dtype. Values off
      the mask are ignored.
    noise_std: noise standard deviation per pixel, ``[..., N, N]`` or
      ``[..., N, N, C]``; finite and > 0 on observed pixels.
    mask: ``[..., N, N]``, the 0/1 indicator of observed pixels; default:
      all pixels. An all-zero mask is allowed: the posterior is then the
      prior.
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
    A `tfp_massmap.mcmc.PosteriorSamples`, ``[...]`` being the batch shape
    of the data (empty for one map):

    * ``samples``: ``[num_results * num_chains, ..., N, N]`` kept MCMC
      states, result-major; successive samples of a chain are correlated
      (see the effective sample sizes).
    * ``mean``, ``std``: ``[..., N, N]``, over every post-warm-up transition
      of every chain (not only the kept ones).
    * ``interval_68``, ``interval_95``: ``[2, ..., N, N]``,
      `credible_interval` of ``samples``.
    * ``trace``: a `ChainTrace` of the kept states ``[num_results,
      num_chains, ..., N, N]`` (chain axis second, as
      `tfp.mcmc.potential_scale_reduction` reads it), ``sigma`` 0 (the exact
      posterior) and each kept transition's acceptance probability.
    * ``diagnostics``: per map (numpy arrays of the batch shape, floats for
      one map): ``acceptance_rate`` (mean over post-warm-up transitions and
      chains), ``step_size`` (adapted step size in w, before jitter),
      ``r_hat_max`` and ``r_hat_median`` (split R-hat of κ over pixels),
      ``ess_min`` and ``ess_median`` (effective sample size of κ over
      pixels, all chains together, in kept samples), ``ess_target_log_prob``
      (of the log posterior at the kept states); per chain,
      ``acceptance_per_chain`` (``[num_chains, ...]`` as nested lists).
      Totals: ``gradient_evaluations_per_chain``, ``gradient_evaluations``
      (over all chains and maps), ``wall_time_s``, ``warmup_wall_time_s``,
      ``sampling_wall_time_s`` (seconds, compilation included), and the
      settings used.

  Raises:
    ValueError: for a missing or mismatched field, shapes that do not match
      or broadcast, data of another dtype than the field's, non-finite data
      or non-positive noise on observed pixels, a mask value other than 0
      and 1, or bad sampler settings.
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
  target_accept_prob, step_size_jitter = _checks.hmc_adaptation(
      target_accept_prob, step_size_jitter)
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
  shear, noise_std, mask, batch_shape = _prepare_data(
      shear, noise_std, mask, n, channels, dtype)
  jit_compile = driver.default_jit_compile(jit_compile)

  # Fourier-space constants on the rfft half-plane: g = irfft(a · rfft(w)),
  # ‖z‖² = Σ_half weight · |rfft(w)|² (Parseval, half-plane multiplicity).
  mass = _preconditioner(field, operator, noise_std, mask, preconditioner)
  latent = field.latent_power_grid.numpy().astype(np.float64)
  half = n // 2 + 1
  multiplicity = lensing.rfft_multiplicity(n)
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

  hmc, adaptive_kernel = jittered_step_size.adaptive_jittered_hmc(
      target_log_prob_fn,
      tf.fill(step_shape, tf.constant(initial_step, dtype)),
      num_leapfrog_steps=num_leapfrog_steps, jitter=step_size_jitter,
      num_adaptation_steps=num_burnin_steps,
      target_accept_prob=tf.constant(target_accept_prob, dtype))

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

  def trace_fn(w, results):
    log_accept_ratio = unnest.get_innermost(results, 'log_accept_ratio')
    return (convergence(w),
            unnest.get_innermost(results, 'target_log_prob'),
            tf.exp(tf.minimum(log_accept_ratio, 0.)))

  seed = samplers.sanitize_seed(seed, salt='lognormal_posterior')
  _, results, traces, step_size, warmup_time, wall_time = (
      driver.adapt_then_sample(
          adaptive_kernel, sampling_kernel, start, trace_fn,
          num_burnin_steps=num_burnin_steps, num_results=num_results,
          thinning=thinning, seed=seed, jit_compile=jit_compile,
          max_chunk_steps=_MAX_CHUNK_STEPS, desc='lognormal posterior HMC',
          progress=progress))

  # [R, C, ..., N, N], [R, C, ...] and [R, C, ...].
  kept_kappa, kept_log_prob, kept_accept = (
      tf.concat(part, axis=0) for part in zip(*traces))
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
      acceptance_per_chain=np.asarray(moments['accepted']).tolist(),
      step_size=_per_map(tf.reshape(step_size, batch_shape)),
      r_hat_max=_per_map(tf.reduce_max(pixels(r_hat), axis=-1)),
      r_hat_median=_per_map(tfp.stats.percentile(pixels(r_hat), 50., axis=-1)),
      ess_min=_per_map(tf.reduce_min(pixels(ess), axis=-1)),
      ess_median=_per_map(tfp.stats.percentile(pixels(ess), 50., axis=-1)),
      ess_target_log_prob=_per_map(total_ess(kept_log_prob)),
      gradient_evaluations_per_chain=per_chain,
      gradient_evaluations=per_chain * num_chains * num_maps,
      wall_time_s=wall_time,
      warmup_wall_time_s=warmup_time,
      sampling_wall_time_s=wall_time - warmup_time,
      num_chains=num_chains,
      num_results=num_results,
      num_burnin_steps=num_burnin_steps,
      num_leapfrog_steps=num_leapfrog_steps,
      num_steps_between_results=thinning - 1,
      target_accept_prob=target_accept_prob,
      step_size_jitter=step_size_jitter,
      preconditioner=bool(preconditioner),
      jit_compile=jit_compile)

  return results_lib.from_samples(
      tf.reshape(kept_kappa, [-1, *batch_shape, n, n]), diagnostics,
      mean=chain_mean(mean),
      std=tf.sqrt(tf.nn.relu(chain_mean(moments['kappa_squared']) -
                             tf.square(chain_mean(mean)))),
      trace=results_lib.ChainTrace(
          states=kept_kappa, sigma=tf.zeros([num_results], dtype),
          accept_probability=kept_accept))

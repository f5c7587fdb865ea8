r"""The exact joint posterior p(κ, θ | γ) of the cosmo lognormal fields.

The ``cosmo_<N>`` maps of the synthetic dataset (`lognormal.cosmo_maps`)
are shifted lognormal fields whose spectrum and shift depend on
θ = (Ωm, σ8):

    κ(z, θ) = λ(θ) [exp(g − σ_g²(θ)/2) − 1],   g = S_g(θ)^{1/2} z,

with z a white standard-normal map, λ(θ) = `cosmology.lognormal_shift`, and
S_g(θ) the latent spectrum `lognormal.LognormalField` builds from
`cosmology.convergence_cl` (θ): the target eigenvalues
S_k = C(ℓ_k)/Δ² (log-linear in ℓ), ξ_g = log(1 + ifft(S)/λ²), P_g =
max(fft(ξ_g), 0), σ_g² = mean P_g. `CosmoLognormalField` computes the same
chain in TensorFlow for any θ in the prior box, so that κ(z, θ) is
differentiable in θ as well as in z (log C_ℓ is bilinear in
(log Ωm, log σ8) between the nodes of the shipped grid, as in
`cosmology.convergence_cl`; its gradient jumps at the nodes, which HMC
tolerates as it does any piecewise-smooth target).

With the prior θ uniform over `cosmology.COSMO_PARAMETER_BOUNDS`, i.e.
u ~ N(0, I) through `theta_posterior.theta_bijector`, and the Gaussian data
model `likelihood.ShearLikelihood`,

    log p(z, u | γ) = log p(γ | κ(z, θ(u))) − ½ ‖z‖² − ½ ‖u‖² + const

is known exactly: `exact_theta_posterior` samples it with TFP's
Metropolis-corrected HMC, so its θ draws are those of the exact field-level
posterior of the generating model, with no network and no summary
statistic. It is the reference a learned joint prior is measured against on
the same maps (`benchmarks/bench_exact_theta.py`). Any mask and noise map
are allowed (the likelihood is the shear-space one).

``gaussian=True`` gives the Gaussian field of the same spectrum (κ = g,
S_g = S), whose θ posterior on fully observed white-noise data is known in
closed form (`tests/test_lognormal_cosmology.py` checks the sampler on it).

κ, shear and noise are dimensionless; ℓ in rad⁻¹, C_ℓ in sr, the pixel
scale in arcmin.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import unnest

from tfp_massmap import _checks
from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import likelihood as likelihood_lib
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import theta_posterior
from tfp_massmap.mcmc import driver
from tfp_massmap.mcmc import jittered_step_size
from tfp_massmap.mcmc import results as results_lib

__all__ = [
    'CosmoLognormalField',
    'exact_joint_posterior',
    'exact_theta_posterior',
]

_MAX_CHUNK_STEPS = 25


def _safe_sqrt(x):
  """√x for x >= 0, with a zero (not NaN) gradient where x == 0."""
  positive = x > 0
  return tf.where(positive, tf.sqrt(tf.where(positive, x, tf.ones_like(x))),
                  tf.zeros_like(x))


class CosmoLognormalField:
  """κ(z, θ) of the ``cosmo_<N>`` maps, differentiable in z and θ.

  For each θ = (Ωm, σ8) it is the `lognormal.LognormalField` of spectrum
  `cosmology.convergence_cl` (θ) and shift `cosmology.lognormal_shift` (θ)
  (module docstring), computed in TensorFlow and batched over θ.

  #### Examples

  ```python
  field = CosmoLognormalField(map_size=32, pixel_scale_arcmin=3.2)
  white = np.random.default_rng(5).standard_normal((32, 32))
  kappa = field.convergence_from_white(white, [0.3, 0.8])  # [32, 32]
  ```
  """

  def __init__(self, map_size, pixel_scale_arcmin, gaussian=False,
               dtype=tf.float64):
    """Precomputes the θ-independent interpolation weights.

    Args:
      map_size: pixels per side N (int >= 2).
      pixel_scale_arcmin: pixel side [arcmin] (> 0).
      gaussian: True for the Gaussian field of the same spectrum (κ = g).
      dtype: float32 or float64, of every tensor returned.

    Raises:
      ValueError: for a bad size, pixel scale or dtype.
    """
    n = _checks.positive_int(map_size, 'map_size', minimum=2)
    pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                  'arcmin')
    self._dtype = _checks.float_dtype(dtype, 'dtype')
    self._map_size = n
    self._pixel_scale_arcmin = pix
    self._gaussian = bool(gaussian)
    self._spectrum = power_spectrum_likelihood.CosmoSpectrum(n, pix, dtype)
    # How often each rfft2d half-plane mode appears in the full N×N grid.
    self._multiplicity = tf.constant(lensing.rfft_multiplicity(n), dtype)
    self._bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS, np.float64)

  @property
  def map_size(self):
    """Pixels per side N."""
    return self._map_size

  @property
  def pixel_scale_arcmin(self):
    """Pixel side in arcmin."""
    return self._pixel_scale_arcmin

  @property
  def gaussian(self):
    """True for the Gaussian field of the same spectrum."""
    return self._gaussian

  @property
  def dtype(self):
    return self._dtype

  @property
  def theta_bounds(self):
    """The prior box ``[D, 2]`` of θ (`cosmology.COSMO_PARAMETER_BOUNDS`)."""
    return self._bounds.copy()

  def target_power_grid(self, theta):
    """S_k(θ) = C(ℓ_k; θ) / Δ² ``[..., N, N]`` (0 at k = 0), θ ``[..., 2]``.

    `power_spectrum_likelihood.CosmoSpectrum.power_grid`.
    """
    return self._spectrum.power_grid(theta)

  def shift(self, theta):
    """λ(θ) ``[...]`` of `cosmology.lognormal_shift`, θ ``[..., 2]``."""
    theta = tf.convert_to_tensor(theta, self._dtype)
    return cosmology.COSMOS_SHIFT * (
        theta[..., 0] / cosmology.FIDUCIAL_OMEGA_M)**(
            cosmology.SHIFT_OMEGA_M_EXPONENT)

  def latent(self, theta):
    """(√P_g ``[..., N, N//2+1]``, σ_g² ``[...]``) of the latent field at θ.

    √P_g on the half-plane of `tf.signal.rfft2d` (P_g is symmetric under
    k → −k); σ_g² = mean of P_g over all N² modes.
    """
    n = self._map_size
    half = self.target_power_grid(theta)[..., :n // 2 + 1]
    if not self._gaussian:
      shift = self.shift(theta)[..., tf.newaxis, tf.newaxis]
      xi_kappa = tf.signal.irfft2d(tf.complex(half, tf.zeros_like(half)),
                                   fft_length=[n, n])
      xi_latent = tf.math.log1p(xi_kappa / tf.square(shift))
      half = tf.nn.relu(tf.math.real(tf.signal.rfft2d(xi_latent)))
    latent_variance = tf.reduce_sum(
        self._multiplicity * half, axis=[-2, -1]) / n**2
    return _safe_sqrt(half), latent_variance

  def convergence_from_white(self, white, theta):
    """κ(z, θ) ``[..., N, N]`` from white maps z ``[..., N, N]``, θ ``[..., 2]``.

    The leading axes of ``white`` and ``theta`` broadcast. θ must lie in
    `theta_bounds` (outside, log C_ℓ is held at the nearest edge of the
    grid).
    """
    white = tf.convert_to_tensor(white, self._dtype)
    theta = tf.convert_to_tensor(theta, self._dtype)
    amplitude, latent_variance = self.latent(theta)
    n = self._map_size
    latent = tf.signal.irfft2d(
        tf.complex(amplitude, tf.zeros_like(amplitude)) *
        tf.signal.rfft2d(white), fft_length=[n, n])
    if self._gaussian:
      return latent
    shift = self.shift(theta)[..., tf.newaxis, tf.newaxis]
    return shift * tf.math.expm1(
        latent - 0.5 * latent_variance[..., tf.newaxis, tf.newaxis])


def _initial_state(initial_state, field, num_chains, bijector):
  """(z ``[C, N, N]``, u ``[C, 1, 2]``) numpy of an ``(white, theta)`` pair."""
  try:
    white, theta = initial_state
  except (TypeError, ValueError):
    raise ValueError('initial_state must be None or a pair (white, theta), '
                     f'got {type(initial_state).__name__}.') from None
  n = field.map_size
  white = np.asarray(white, np.float64)
  theta = np.asarray(theta, np.float64)
  if white.shape not in ((n, n), (num_chains, n, n)):
    raise ValueError(f'initial_state white map must have shape [{n}, {n}] or '
                     f'[{num_chains}, {n}, {n}] (num_chains), got '
                     f'{white.shape}.')
  if theta.shape not in ((2,), (num_chains, 2)):
    raise ValueError('initial_state theta must have shape [2] or '
                     f'[{num_chains}, 2] (num_chains), got {theta.shape}.')
  bounds = field.theta_bounds
  if not np.all((theta > bounds[:, 0]) & (theta < bounds[:, 1])):
    raise ValueError(f'initial_state theta {theta.tolist()} must lie strictly '
                     f'inside the prior box {bounds.tolist()}.')
  white = np.broadcast_to(white, (num_chains, n, n))
  u = bijector.inverse(tf.constant(np.broadcast_to(theta, (num_chains, 2)),
                                  field.dtype)).numpy()
  return white, u[:, np.newaxis, :]


def exact_joint_posterior(shear_map, field, **settings):
  """Draws (κ, θ) from the exact p(κ, θ | γ) of a `CosmoLognormalField`.

  The κ draws are those of the exact posterior of the map marginalised over
  θ, the reference for a learned joint posterior's κ (and their θ the
  reference for its θ). The sampler is `exact_theta_posterior`'s, whose
  chains this runs (the same θ draws for the same seed), keeping κ(z, θ) of
  every kept transition as well.

  Args:
    shear_map: the data, as `exact_theta_posterior`.
    field: a `CosmoLognormalField`.
    **settings: the sampler's keyword arguments, as `exact_theta_posterior`
      (``num_chains``, ``num_burnin_steps``, ``num_results``, ``seed``, …).

  Returns:
    A `tfp_massmap.PosteriorSamples`: ``samples`` κ ``[num_results ·
    num_chains, N, N]`` (result-major, as the θ draws; successive draws of
    a chain correlated), their per-pixel mean, std and central 68 / 95 %
    intervals, ``parameters`` {name: draws ``[num_results · num_chains]``}
    for each of `cosmology.COSMO_PARAMETER_NAMES`, and the diagnostics of
    `exact_theta_posterior` with the per-pixel ``kappa_r_hat_max`` (split
    R̂) and ``kappa_ess_min`` / ``kappa_ess_median`` (effective sample
    size of all kept draws).

  Raises:
    ValueError: as `exact_theta_posterior`.
  """
  theta, kappa, diagnostics = _sample(shear_map, field, True, **settings)
  n = field.map_size
  return results_lib.from_samples(
      tf.reshape(kappa, [-1, n, n]), diagnostics,
      parameters={name: theta[:, d] for d, name in
                  enumerate(cosmology.COSMO_PARAMETER_NAMES)})


def exact_theta_posterior(shear_map, field, **settings):
  """Draws θ from the exact posterior p(θ | γ) of a `CosmoLognormalField`.

  HMC (`tfp.mcmc.HamiltonianMonteCarlo`) on (z, u), κ = κ(z, θ(u)) (module
  docstring), ``num_chains`` chains from independent prior draws (or from
  ``initial_state``); the step size (one for z, ``theta_step_scale`` times
  it for u) adapts for ``num_burnin_steps`` transitions
  (`tfp.mcmc.DualAveragingStepSizeAdaptation`), then ``num_results ·
  (num_steps_between_results + 1)`` transitions at the adapted step size
  times U(1 − j, 1 + j) per chain and transition
  (`tfp_massmap.mcmc.JitteredStepSize`), every
  ``num_steps_between_results + 1``-th kept.

  Args:
    shear_map: the data, a `tfp_massmap.ShearMap` of one map of side
      ``field.map_size`` (any mask and noise; cast to the field's dtype).
    field: a `CosmoLognormalField`.
    **settings: keyword arguments, each optional:
    num_chains: chains (int >= 2: R̂ compares them; default 8).
    num_burnin_steps: adaptation transitions (int >= 1; default 300).
    num_results: kept transitions per chain (int >= 4; default 100).
    num_steps_between_results: thinning (int >= 0; default 1).
    num_leapfrog_steps: leapfrog steps per transition (int >= 1; default
      16).
    target_accept_prob: mean acceptance the adaptation aims at, in (0, 1)
      (default 0.75).
    step_size_jitter: j in [0, 1) (default 0.2).
    theta_step_scale: u's step over z's (> 0; default 1).
    initial_state: None (default: each chain starts at an independent
      draw of the prior), or ``(white, theta)``: the white map(s) z ``[N, N]`` or
      ``[num_chains, N, N]`` and θ ``[2]`` or ``[num_chains, 2]`` (strictly
      inside `theta_bounds`) the chains start from, e.g. the truth of a
      simulated map (`lognormal.white_from_seeds`), which is a draw from
      the posterior: chains started there test the sampler's convergence.
    seed: stateless seed, or None (default).
    jit_compile: XLA; default True when a GPU is visible.
    progress: show a tqdm progress bar (default False).

  Returns:
    ``(theta, diagnostics)``, as `theta_posterior.sample_theta_posterior`:
    θ ``[num_results · num_chains, 2]`` (numpy float64; result-major,
    successive draws of a chain correlated) and a dict: ``r_hat`` and
    ``ess`` of each θ component (split R̂ across chains; effective sample
    size of all kept draws), ``acceptance_rate`` (after warm-up),
    ``step_size`` (z's, adapted), ``gradient_evaluations_per_chain``,
    ``wall_time_s`` and the settings.

  Raises:
    ValueError: for a field that is not a `CosmoLognormalField`, data of
      another size, bad sampler settings, or an initial state of another
      shape or with θ not inside the prior box.
  """
  theta, _, diagnostics = _sample(shear_map, field, False, **settings)
  return theta, diagnostics


def _sample(shear_map, field, keep_convergence, *, num_chains=8,
            num_burnin_steps=300, num_results=100, num_steps_between_results=1,
            num_leapfrog_steps=16, target_accept_prob=0.75,
            step_size_jitter=0.2, theta_step_scale=1., initial_state=None,
            seed=None, jit_compile=None, progress=False):
  """HMC over (z, u): (θ ``[S, 2]``, κ ``[S, N, N]`` or None, diagnostics)."""
  if not isinstance(field, CosmoLognormalField):
    raise ValueError('field must be a CosmoLognormalField, got '
                     f'{type(field).__name__}.')
  num_chains = _checks.positive_int(num_chains, 'num_chains', minimum=2)
  num_burnin_steps = _checks.positive_int(num_burnin_steps, 'num_burnin_steps')
  num_results = _checks.positive_int(num_results, 'num_results', minimum=4)
  thinning = _checks.positive_int(num_steps_between_results,
                                  'num_steps_between_results', minimum=0) + 1
  num_leapfrog_steps = _checks.positive_int(num_leapfrog_steps,
                                            'num_leapfrog_steps')
  target_accept_prob, step_size_jitter = _checks.hmc_adaptation(
      target_accept_prob, step_size_jitter)
  theta_step_scale = _checks.positive_scalar(theta_step_scale,
                                             'theta_step_scale')
  n, dtype = field.map_size, field.dtype
  data = shear_map_lib.as_shear_map(shear_map, dtype=dtype)
  if tuple(data.shear.shape) != (n, n, 2):
    raise ValueError(f'shear_map must hold one {n}x{n} map (the field\'s '
                     f'map_size), got shear of shape {data.shear.shape}.')
  shear = tf.convert_to_tensor(data.shear, dtype)
  noise = tf.convert_to_tensor(data.noise_std, dtype)
  mask = tf.convert_to_tensor(data.mask, dtype)
  bijector = theta_posterior.theta_bijector(field.theta_bounds, dtype)
  jit_compile = driver.default_jit_compile(jit_compile)
  if initial_state is not None:
    initial_state = _initial_state(initial_state, field, num_chains, bijector)

  def target_log_prob_fn(white, u):
    theta = bijector.forward(u[:, 0, :])
    kappa = field.convergence_from_white(white, theta)
    log_likelihood = likelihood_lib.ShearLikelihood(
        kappa, noise, mask).log_prob(shear)
    return (log_likelihood - 0.5 * tf.reduce_sum(tf.square(white), [-2, -1])
            - 0.5 * tf.reduce_sum(tf.square(u), [-2, -1]))

  initial_step = float(n)**-0.5
  hmc, adaptive = jittered_step_size.adaptive_jittered_hmc(
      target_log_prob_fn,
      [tf.fill([1, 1], tf.constant(initial_step, dtype)),
       tf.fill([1, 1], tf.constant(initial_step * theta_step_scale, dtype))],
      num_leapfrog_steps=num_leapfrog_steps, jitter=step_size_jitter,
      num_adaptation_steps=num_burnin_steps,
      target_accept_prob=tf.constant(target_accept_prob, dtype))

  @tf.function(jit_compile=jit_compile, autograph=False)
  def start(seed):
    if initial_state is None:
      white_seed, u_seed = samplers.split_seed(seed)
      state = [samplers.normal([num_chains, n, n], dtype=dtype,
                               seed=white_seed),
               samplers.normal([num_chains, 1, 2], dtype=dtype, seed=u_seed)]
    else:
      state = [tf.constant(part, dtype) for part in initial_state]
    return state, adaptive.bootstrap_results(state)

  def trace_fn(state, results):
    log_accept_ratio = unnest.get_innermost(results, 'log_accept_ratio')
    theta = bijector.forward(state[1][:, 0, :])
    kappa = (field.convergence_from_white(state[0], theta)
             if keep_convergence else tf.zeros([0], dtype))
    return theta, tf.exp(tf.minimum(log_accept_ratio, 0.)), kappa

  seed = samplers.sanitize_seed(seed, salt='exact_theta_posterior')
  _, _, traces, step_size, _, wall_time = driver.adapt_then_sample(
      adaptive, hmc, start, trace_fn, num_burnin_steps=num_burnin_steps,
      num_results=num_results, thinning=thinning, seed=seed,
      jit_compile=jit_compile, max_chunk_steps=_MAX_CHUNK_STEPS,
      desc='exact theta posterior HMC', progress=progress)
  kept_theta, kept_accept, kept_kappa = (tf.concat(part, axis=0)
                                         for part in zip(*traces))
  r_hat = tfp.mcmc.potential_scale_reduction(
      kept_theta, independent_chain_ndims=1, split_chains=True)
  ess = tfp.mcmc.effective_sample_size(
      kept_theta, filter_beyond_positive_pairs=True, cross_chain_dims=1)
  diagnostics = dict(
      r_hat=np.asarray(r_hat).tolist(), ess=np.asarray(ess).tolist(),
      acceptance_rate=float(tf.reduce_mean(kept_accept)),
      step_size=float(tf.reshape(step_size[0], [])),
      gradient_evaluations_per_chain=(
          1 + (num_burnin_steps + num_results * thinning) *
          num_leapfrog_steps),
      wall_time_s=wall_time, num_chains=num_chains,
      num_burnin_steps=num_burnin_steps, num_results=num_results,
      num_steps_between_results=thinning - 1,
      num_leapfrog_steps=num_leapfrog_steps,
      target_accept_prob=target_accept_prob,
      step_size_jitter=step_size_jitter, theta_step_scale=theta_step_scale,
      gaussian=field.gaussian, jit_compile=jit_compile,
      initial_state='prior draws' if initial_state is None else 'given')
  if keep_convergence:
    pixels = lambda x: tf.reshape(x, [-1])
    kappa_ess = pixels(tfp.mcmc.effective_sample_size(
        kept_kappa, filter_beyond_positive_pairs=True, cross_chain_dims=1))
    diagnostics.update(
        kappa_r_hat_max=float(tf.reduce_max(tfp.mcmc.potential_scale_reduction(
            kept_kappa, independent_chain_ndims=1, split_chains=True))),
        kappa_ess_min=float(tf.reduce_min(kappa_ess)),
        kappa_ess_median=float(tfp.stats.percentile(kappa_ess, 50.)))
  return (np.asarray(kept_theta, np.float64).reshape(-1, 2),
          kept_kappa if keep_convergence else None, diagnostics)

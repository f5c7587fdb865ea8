r"""The field-level marginal posterior of cosmological parameters, p(θ | γ).

The joint posterior factorises as p(κ, θ | γ) = p(θ | γ) p(κ | γ, θ). Its
second factor is the conditional posterior every κ sampler of the package
draws; this module draws the first, with κ integrated out exactly, so that θ
never has to move through the map's thousands of noise-dominated modes (the
funnel that stops the annealed joint HMC at 128²:
docs/benchmarks.md, "At the demo's size").

#### The identity

Shear observed on every pixel of the periodic grid, with the same noise
σ_n on every pixel and component, is the convergence seen through white
noise: the Kaiser-Squires operator is unitary on the E and B modes (the map
mean aside), so the E-mode map is κ_E = κ + n with n ~ N(0, σ_n² I), and the
B-mode map is pure noise, independent of κ and θ. Hence

  p(γ | θ) = ∫ p(γ | κ) p(κ | θ) dκ ∝ ∫ N(κ_E; κ, σ_n² I) p(κ | θ) dκ
           = p_{σ_n}(κ_E | θ),

the σ-smoothed conditional prior at σ = σ_n, evaluated at the data's E-mode
map, up to a factor that does not depend on θ. Every joint prior here
smooths κ with exactly this Gaussian (``priors/conditional.py``), so its
optional member ``field_log_likelihood(x, theta, sigma)`` (log p_σ(x | θ)
up to a θ-independent term) is the θ likelihood, with no approximation:

* `AmplitudeGaussianPrior`: log N(κ_E; 0, A(θ) S + σ_n²), closed form;
* `LearnedJointPrior` with a ratio network: the network's
  ℓ(κ_E, θ, σ_n) = log p_σ(κ_E | θ) − log p_σ(κ_E), trained on exactly
  such smoothed maps (its accuracy is the network's).

A mask or a noise level that varies from pixel to pixel breaks the identity
(the noise on κ_E is then correlated and its pattern is not the prior's
smoothing), and `white_noise_level` refuses such data, naming what it found.
`joint_posterior.JointPosteriorSampler` samples them anyway, exactly, by
data augmentation: `impute_white_shear` draws white-noise data on the full
grid given κ (noise level `augmentation_noise_level`, the lowest observed
one), whose θ likelihood is again the identity above, inside a Gibbs
sampler.

#### Sampling θ

θ has a few components, so its posterior is sampled with TFP's own
Metropolis-corrected `tfp.mcmc.HamiltonianMonteCarlo` and
`tfp.mcmc.DualAveragingStepSizeAdaptation`, through `tfp.mcmc.sample_chain`:
one chain per requested sample on the unconstrained u of
`theta_bijector` (θ = low + (high − low) Φ(u), the log-det
Jacobian in the target), started from the prior, ``num_burnin_steps``
transitions of which the first 80 % adapt the step size, then
``num_results`` more whose split-R̂ across chains is reported; each chain's
last state is one sample. The chains are exact up to Monte Carlo error, so
their θ marginal is the exact one for an analytic prior.

Shear, convergence and noise are dimensionless; θ has its own units.
"""

import functools
import time

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.bijectors import chain as chain_bijector
from tensorflow_probability.python.bijectors import normal_cdf
from tensorflow_probability.python.bijectors import scale as scale_bijector
from tensorflow_probability.python.bijectors import shift as shift_bijector
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.mcmc import diagnostic
from tensorflow_probability.python.mcmc import dual_averaging_step_size_adaptation as dual_averaging
from tensorflow_probability.python.mcmc import hmc
from tensorflow_probability.python.mcmc import sample as sample_lib

from tfp_massmap import _checks
from tfp_massmap import lensing
from tfp_massmap import posterior
from tfp_massmap.priors import conditional

__all__ = [
    'DEFAULT_NUM_BURNIN_STEPS',
    'DEFAULT_NUM_RESULTS',
    'augmentation_noise_level',
    'check_field_level',
    'impute_white_shear',
    'sample_theta_posterior',
    'theta_bijector',
    'theta_log_posterior_fn',
    'white_noise_level',
]

# HMC on u (module docstring): burn-in (80 % adapting) and kept transitions.
DEFAULT_NUM_BURNIN_STEPS = 400
DEFAULT_NUM_RESULTS = 200
_NUM_LEAPFROG_STEPS = 4
_TARGET_ACCEPT_PROB = 0.75
# Relative spread of noise_std accepted as one white noise level.
_WHITE_RTOL = 1e-5


def theta_bijector(bounds, dtype):
  """θ = low + (high − low) Φ(u), from u ∈ ℝ^D onto the box ``bounds``.

  Args:
    bounds: ``[D, 2]`` (low, high) per parameter.
    dtype: float32 or float64.

  Returns:
    A `tfb.Chain` of `tfb.Shift`, `tfb.Scale` and `tfb.NormalCDF` (Φ, the
    standard normal CDF): θ uniform over ``bounds`` is u ~ N(0, I).
  """
  bounds = np.asarray(bounds, tf.as_dtype(dtype).as_numpy_dtype)
  return chain_bijector.Chain([
      shift_bijector.Shift(tf.constant(bounds[:, 0])),
      scale_bijector.Scale(tf.constant(bounds[:, 1] - bounds[:, 0])),
      normal_cdf.NormalCDF()])


def white_noise_level(shear_map):
  """The one per-component noise σ_n of fully observed data, or an error.

  Args:
    shear_map: a `tfp_massmap.ShearMap` of one map.

  Returns:
    σ_n, a Python float (dimensionless): `augmentation_noise_level`'s σ_w,
    so the sampler's white-data route and `sample_theta_posterior` agree.

  Raises:
    ValueError: for observed noise that is not finite and > 0 (as
      `augmentation_noise_level`), or when a pixel is masked or the noise
      is not the same on every pixel and component (to relative 1e-5),
      naming the masked fraction or the noise range: the field-level θ
      likelihood (module docstring) holds only for white noise on the full
      periodic grid.
  """
  level, white = augmentation_noise_level(shear_map)
  if white:
    return level
  mask = np.asarray(shear_map.mask, np.float64)
  if np.any(mask != 1.):
    raise ValueError(
        f'the field-level theta likelihood needs data on every pixel, but '
        f'{np.mean(mask != 1.):.1%} of the mask is not 1 (white noise on the '
        'full grid is what makes p(gamma | theta) exact): '
        'JointPosteriorSampler samples masked data by imputing white-noise '
        'data (module docstring).')
  noise = np.asarray(shear_map.noise_std, np.float64)
  raise ValueError(
      f'the field-level theta likelihood needs one noise level on every '
      f'pixel and component (white noise), got noise_std from '
      f'{noise.min():.6g} to {noise.max():.6g}: JointPosteriorSampler samples '
      'such data by imputing white-noise data (module docstring).')


def augmentation_noise_level(shear_map):
  """(σ_w, white): the lowest observed noise; whether the data are white.

  σ_w, the smallest noise on the observed pixels, is the noise level of
  the imputed white-noise data of `impute_white_shear` (per component,
  dimensionless); ``white`` is True
  when every pixel is observed with noise σ_w (to relative 1e-5): the data
  are then their own white-noise data on the full grid.
  """
  mask = np.asarray(shear_map.mask, np.float64)
  noise = np.broadcast_to(
      np.asarray(shear_map.noise_std, np.float64).reshape(
          mask.shape + (-1,)), mask.shape + (2,))
  observed = noise[mask > 0]
  if observed.size == 0:
    raise ValueError('the mask has no observed pixel: there is no data.')
  low = float(observed.min())
  if not (np.isfinite(low) and low > 0.):
    raise ValueError('noise_std must be finite and > 0 on the observed '
                     f'pixels, got a minimum of {low:g}.')
  white = bool(np.all(mask == 1.) and
               np.all(noise - low <= _WHITE_RTOL * low))
  return low, white


def impute_white_shear(shear_map, kappa, noise_level, seed):
  """Draws white-noise data y ~ p(y | κ, γ) on the full grid, per pixel.

  The data model γ = y + δ with y = Aκ + n_w (n_w ~ N(0, σ_w²) on every
  pixel and component) and δ ~ N(0, σ_pix² − σ_w²) where observed
  (σ_w <= σ_pix: `augmentation_noise_level`) reproduces the likelihood
  exactly, so given κ and γ each y is Gaussian:

  * observed: mean ((σ_pix² − σ_w²) Aκ + σ_w² γ) / σ_pix², variance
    σ_w² (σ_pix² − σ_w²) / σ_pix² (y = γ where σ_pix = σ_w);
  * masked: mean Aκ, variance σ_w².

  Args:
    shear_map: the data, a `ShearMap` (shear ``[N, N, 2]``, noise ``[N, N]``
      or ``[N, N, 2]``, mask ``[N, N]``).
    kappa: maps ``[C, N, N]``, one per chain.
    noise_level: σ_w (Python float).
    seed: stateless seed.

  Returns:
    y ``[C, N, N, 2]``, in the dtype of ``kappa``.
  """
  kappa = tf.convert_to_tensor(kappa)
  dtype = kappa.dtype
  shear = tf.cast(shear_map.shear, dtype)
  noise = tf.cast(shear_map.noise_std, dtype)
  if noise.shape.rank == 2:
    noise = noise[..., tf.newaxis]
  observed = tf.cast(shear_map.mask, dtype)[..., tf.newaxis] > 0
  white_var = tf.constant(noise_level**2, dtype)
  pixel_var = tf.maximum(tf.square(noise), white_var)
  extra = pixel_var - white_var
  model = lensing.shear_from_convergence(kappa)
  mean = tf.where(observed, (extra * model + white_var * shear) / pixel_var,
                  model)
  variance = tf.where(observed, white_var * extra / pixel_var, white_var)
  return mean + tf.sqrt(variance) * samplers.normal(
      tf.shape(mean), dtype=dtype, seed=seed)


def check_field_level(joint_prior):
  """Raises unless ``joint_prior`` has a callable ``field_log_likelihood``."""
  _field_log_likelihood(joint_prior)


def _field_log_likelihood(joint_prior):
  method = getattr(joint_prior, 'field_log_likelihood', None)
  if not callable(method):
    raise ValueError(
        f'{type(joint_prior).__name__} has no field_log_likelihood(x, theta, '
        'sigma) member (log p_sigma(x | theta) up to a theta-independent '
        "term), which the marginal theta posterior needs: use theta_update="
        "'annealed', or a prior that has it (AmplitudeGaussianPrior, "
        'LearnedJointPrior with a ratio network).')
  return method


def theta_log_posterior_fn(shear_map, joint_prior):
  """θ ↦ log p(θ | γ) up to a constant, for fully observed white-noise data.

  log p(θ) + ``joint_prior.field_log_likelihood(κ_E, θ, σ_n)`` (module
  docstring), κ_E the data's Kaiser-Squires E-mode map (periodic) and σ_n
  their noise level.

  Args:
    shear_map: a `tfp_massmap.ShearMap` of one map, in the prior's dtype,
      mask all 1, one noise level (`white_noise_level`).
    joint_prior: a `JointPrior` with a ``field_log_likelihood`` member.

  Returns:
    A callable ``theta [..., D] -> [...]`` (nats).

  Raises:
    ValueError: for masked or non-white data (`white_noise_level`) or a
      prior without ``field_log_likelihood``.
  """
  noise = white_noise_level(shear_map)
  return _log_posterior_fn(
      tf.convert_to_tensor(shear_map.shear, joint_prior.dtype), noise,
      joint_prior)


def _log_posterior_fn(shear, noise_level, joint_prior):
  """θ ↦ log p(θ) + log p_σ(κ_E | θ) of white-noise shear ``[..., N, N, 2]``.

  The leading axes of ``shear`` (one map or one per chain) broadcast
  against those of θ; ``noise_level`` σ_n, a float or scalar tensor.
  """
  field_log_likelihood = _field_log_likelihood(joint_prior)
  kappa_e, _ = lensing.kaiser_squires(shear)
  noise_level = tf.cast(noise_level, joint_prior.dtype)

  def log_posterior(theta):
    theta = tf.convert_to_tensor(theta, joint_prior.dtype)
    return joint_prior.log_prob_theta(theta) + field_log_likelihood(
        kappa_e, theta, noise_level)
  return log_posterior


@functools.lru_cache(maxsize=16)
def _compiled_chain(joint_prior, num_burnin_steps, num_results):
  """The compiled HMC run on u, one per prior and chain lengths.

  ``run(start, seed, shear, noise_level)``: the data enter as tensors, so
  the Gibbs sweeps of `joint_posterior` and repeated maps do not retrace.
  """
  dtype = tf.as_dtype(joint_prior.dtype)
  bounds = np.asarray(joint_prior.theta_bounds, np.float64)
  bijector = theta_bijector(bounds, dtype)
  log_width = tf.constant(np.sum(np.log(bounds[:, 1] - bounds[:, 0])), dtype)

  @tf.function(autograph=False)
  def run(start, seed, shear, noise_level):
    log_posterior = _log_posterior_fn(shear, noise_level, joint_prior)

    def target(u):
      # log|dθ/du| = Σ log((high − low) φ(u)).
      log_jacobian = tf.reduce_sum(
          -0.5 * tf.square(u) - 0.5 * np.log(2. * np.pi), axis=-1) + log_width
      return log_posterior(bijector.forward(u)) + log_jacobian

    kernel = dual_averaging.DualAveragingStepSizeAdaptation(
        hmc.HamiltonianMonteCarlo(target, step_size=tf.constant(0.1, dtype),
                                  num_leapfrog_steps=_NUM_LEAPFROG_STEPS),
        num_adaptation_steps=int(0.8 * num_burnin_steps),
        target_accept_prob=tf.constant(_TARGET_ACCEPT_PROB, dtype))
    return sample_lib.sample_chain(
        num_results=num_results, num_burnin_steps=num_burnin_steps,
        current_state=start, kernel=kernel, seed=seed,
        trace_fn=lambda _, pkr: (pkr.inner_results.is_accepted,
                                 pkr.new_step_size))
  return run


def sample_u(shear, noise_level, joint_prior, *, num_samples, seed,
             start=None, num_burnin_steps=DEFAULT_NUM_BURNIN_STEPS,
             num_results=DEFAULT_NUM_RESULTS):
  """Samples u ``[num_samples, D]`` of p(θ | γ), θ = `theta_bijector`(u).

  The engine of `sample_theta_posterior` (module docstring), for
  `joint_posterior.JointPosteriorSampler`, which keeps u. Compiled once
  per prior and chain lengths.

  Args:
    shear: fully observed white-noise shear, ``[N, N, 2]`` (all chains) or
      ``[num_samples, N, N, 2]`` (one per chain: the imputed data of
      `impute_white_shear`), in the prior's dtype.
    noise_level: its per-component noise σ_n (Python float).
    joint_prior: a `JointPrior` with ``field_log_likelihood``.
    num_samples: chains.
    seed: stateless seed.
    start: optional starting u ``[num_samples, D]``; default N(0, I) (the
      uniform prior).
    num_burnin_steps, num_results: as in `sample_theta_posterior`.

  Returns:
    ``(u, diagnostics)``: u a ``[num_samples, D]`` tensor, diagnostics a dict
    of Python values: ``acceptance_rate`` (mean over the kept transitions),
    ``rhat`` (split-R̂ per parameter over the kept transitions of all
    chains; None for data per chain, whose chains have different targets),
    ``step_size`` (the adapted leapfrog step in u), ``num_burnin_steps``,
    ``num_results``, ``log_likelihood_evaluations`` per chain and
    ``wall_time_s``.
  """
  check_field_level(joint_prior)
  num_samples = _checks.positive_int(num_samples, 'num_samples')
  num_burnin_steps = _checks.positive_int(num_burnin_steps, 'num_burnin_steps')
  num_results = _checks.positive_int(num_results, 'num_results', minimum=4)
  dtype = tf.as_dtype(joint_prior.dtype)
  shear = tf.convert_to_tensor(shear, dtype)
  init_seed, run_seed = samplers.split_seed(
      samplers.sanitize_seed(seed, salt='sample_theta_posterior'))
  if start is None:
    start = samplers.normal(
        [num_samples, len(joint_prior.theta_bounds)], dtype=dtype,
        seed=init_seed)
  run = _compiled_chain(joint_prior, num_burnin_steps, num_results)
  began = time.perf_counter()
  draws, (accepted, step_size) = run(start, run_seed, shear,
                                     tf.constant(noise_level, dtype))
  wall_time = time.perf_counter() - began
  # Chains of different data (one imputed y each) have different targets.
  rhat = (None if shear.shape.rank > 3 else [float(r) for r in tf.reshape(
      diagnostic.potential_scale_reduction(draws, split_chains=True), [-1])])
  return draws[-1], dict(
      acceptance_rate=float(tf.reduce_mean(tf.cast(accepted, tf.float64))),
      rhat=rhat,
      step_size=float(step_size[-1]),
      num_burnin_steps=num_burnin_steps, num_results=num_results,
      log_likelihood_evaluations=(num_burnin_steps + num_results) *
      _NUM_LEAPFROG_STEPS,
      wall_time_s=wall_time)


def sample_theta_posterior(shear_map, joint_prior, *, num_samples=64,
                           seed=None,
                           num_burnin_steps=DEFAULT_NUM_BURNIN_STEPS,
                           num_results=DEFAULT_NUM_RESULTS):
  """Independent samples of p(θ | γ), κ integrated out exactly.

  For shear observed on every pixel with white noise (module docstring).

  Args:
    shear_map: a `tfp_massmap.ShearMap` of one map in the prior's dtype, its
      mask all 1 and one noise level.
    joint_prior: a `JointPrior` with ``field_log_likelihood``
      (`AmplitudeGaussianPrior`, `LearnedJointPrior` with a ratio network).
    num_samples: independent chains, one sample each.
    seed: stateless seed.
    num_burnin_steps: HMC transitions before the kept ones (the first 80 %
      adapt the step size); default 400.
    num_results: kept transitions per chain, for the split-R̂ (>= 4); the
      samples are their last states.

  Returns:
    ``(theta, diagnostics)``: θ ``[num_samples, D]`` (a tensor in the
    prior's dtype) and the dict of `sample_u`'s diagnostics.

  Raises:
    ValueError: for masked or non-white data, a prior without
      ``field_log_likelihood``, or a bad count.
  """
  conditional.joint_prior_properties(joint_prior)
  data, _ = posterior._checked_data(  # pylint: disable=protected-access
      shear_map, joint_prior, False, 'sample_theta_posterior')
  u, diagnostics = sample_u(
      data.shear, white_noise_level(data), joint_prior,
      num_samples=num_samples, seed=seed,
      num_burnin_steps=num_burnin_steps, num_results=num_results)
  return theta_bijector(joint_prior.theta_bounds,
                        joint_prior.dtype).forward(u), diagnostics

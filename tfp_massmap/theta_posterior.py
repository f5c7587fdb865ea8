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

The map mean is the exception: the Kaiser-Squires kernel vanishes at
k = 0, so κ_E has mean 0 whatever κ's is, and the likelihood is that of
the mean-free map. A ratio network built with ``remove_map_mean`` (the
shipped ones) reads only x − mean(x) and matches this; one that reads
the mean takes the data's 0 as evidence about θ (overconfident at low
noise: docs/benchmarks.md, "The map mean").

A mask or a noise level that varies from pixel to pixel breaks the identity
(the noise on κ_E is then correlated and its pattern is not the prior's
smoothing), and `white_noise_level` refuses such data, naming what it found.
`joint_posterior.JointPosteriorSampler` samples them anyway, exactly, by
data augmentation: `impute_white_shear` draws white-noise data on the full
grid given κ (noise level `augmentation_noise_level`, the lowest observed
one), whose θ likelihood is again the identity above, inside a Gibbs
sampler.

#### Sampling θ

Two methods, the same target. ``method='grid'`` (D <= 2; the default of
`sample_theta_posterior` for D <= 2) is quadrature, `sample_u_grid`: the
log posterior at the centres of a uniform grid of ``num_points`` cells per
axis (128 for D = 1, 40 for D = 2) over the prior box, then again on a
grid of the same size over the smallest box that holds every cell within
``GRID_LOG_CUTOFF`` = 20 nats of the best one (one cell of margin); each
sample is a cell of the fine grid, drawn with probability ∝ its posterior
density, and a uniform point inside it. The density is thus taken as
constant over cells a fraction of the posterior width across (the
``cell_width`` diagnostic against ``std``), which widens the std by the
w²/12 of the cells (1.2 % at cells 0.53 std across, against the dense
exact posterior of a 16² amplitude problem); the mass outside the fine
box is below e^-20 per coarse cell. It costs 2 · num_points^D
evaluations of the field likelihood per data set, with no gradient, where
HMC costs (burn-in + kept) · leapfrog gradients per chain: with the
shipped learned prior on a 32² map, 4 s against 390 s for 64 HMC chains
(docs/benchmarks.md).

``method='hmc'`` (any D): θ's posterior is sampled with TFP's own
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
import warnings

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
    'DEFAULT_GRID_POINTS',
    'DEFAULT_NUM_BURNIN_STEPS',
    'DEFAULT_NUM_RESULTS',
    'GRID_LOG_CUTOFF',
    'THETA_METHODS',
    'augmentation_noise_level',
    'check_field_level',
    'checked_theta_method',
    'default_theta_method',
    'impute_white_shear',
    'sample_theta_posterior',
    'sample_u',
    'sample_u_grid',
    'theta_bijector',
    'theta_log_posterior_fn',
    'warn_if_uncalibrated_size',
    'white_noise_level',
]

# HMC on u (module docstring): burn-in (80 % adapting) and kept transitions.
DEFAULT_NUM_BURNIN_STEPS = 400
DEFAULT_NUM_RESULTS = 200
_NUM_LEAPFROG_STEPS = 4
_TARGET_ACCEPT_PROB = 0.75
# Quadrature (module docstring): cells per axis per pass; the fine box holds
# every coarse cell within GRID_LOG_CUTOFF nats of the best; (map, θ) pairs
# per call of the field likelihood.
DEFAULT_GRID_POINTS = {1: 128, 2: 40}
GRID_LOG_CUTOFF = 20.
_GRID_BATCH = 64
THETA_METHODS = ('grid', 'hmc')
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


def warn_if_uncalibrated_size(joint_prior, map_size):
  """Warns when θ is drawn from maps unlike those it is calibrated on.

  A prior's optional ``theta_map_size`` is the map side its field
  likelihood was trained and checked on (the shipped ``cosmo_joint_32``:
  32; ``cosmo_joint_128``: 128). A learned logit summed over pixels does
  not carry over to other sizes: on 128² maps a 32²-trained ratio network
  gave σ8 biased high by 1.4 posterior std (docs/benchmarks.md, "On 128²
  maps: the 32²-trained ratio network is biased").
  """
  size = getattr(joint_prior, 'theta_map_size', None)
  if size is not None and int(map_size) != size:
    warnings.warn(
        f'this prior\'s theta likelihood is calibrated on {size}x{size} maps, '
        f'not {map_size}x{map_size}: its theta posterior is not calibrated on '
        'these data (docs/benchmarks.md: on 128x128 maps a ratio network '
        'trained on 32x32 maps gave sigma8 biased high by 1.4 posterior '
        'std; load_prior(\'cosmo_joint_128\') is trained for that size).',
        stacklevel=3)


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
  check_field_level(joint_prior)
  kappa_e, _ = lensing.kaiser_squires(shear)
  noise_level = tf.cast(noise_level, joint_prior.dtype)

  def log_posterior(theta):
    return _kappa_e_log_posterior(joint_prior, kappa_e, theta, noise_level)
  return log_posterior


def _kappa_e_log_posterior(joint_prior, kappa_e, theta, noise_level):
  """The θ target of both samplers, log p(θ) + log p_σ(κ_E | θ)."""
  theta = tf.convert_to_tensor(theta, joint_prior.dtype)
  return joint_prior.log_prob_theta(theta) + _field_log_likelihood(
      joint_prior)(kappa_e, theta, noise_level)


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
  warn_if_uncalibrated_size(joint_prior, np.shape(shear)[-2])
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


@functools.lru_cache(maxsize=16)
def _compiled_log_posterior(joint_prior):
  """`_kappa_e_log_posterior` of the grid, compiled once per prior."""
  return tf.function(functools.partial(_kappa_e_log_posterior, joint_prior),
                     autograph=False, reduce_retracing=True)


def _cell_centres(low, high, num_points):
  """Centres ``[B, P^D, D]`` and widths ``[B, D]`` of the boxes' grids."""
  width = (high - low) / num_points
  index = np.stack(np.meshgrid(*[np.arange(num_points)] * low.shape[1],
                               indexing='ij'), axis=-1).reshape(-1, low.shape[1])
  return low[:, None, :] + (index[None] + 0.5) * width[:, None, :], width


def _grid_log_posterior(evaluate, kappa_e, centres, noise_level, dtype):
  """The log posterior ``[B, G]`` at the centres, in batches of (map, θ) pairs."""
  batch, size, _ = centres.shape
  chunk = max(1, _GRID_BATCH // batch)
  padded = np.concatenate(  # Whole chunks: one trace.
      [centres, np.repeat(centres[:, -1:], (-size) % chunk, axis=1)], axis=1)
  values = [evaluate(kappa_e, tf.constant(padded[:, i:i + chunk], dtype),
                     noise_level).numpy()
            for i in range(0, padded.shape[1], chunk)]
  return np.concatenate(values, axis=1)[:, :size].astype(np.float64)


def sample_u_grid(shear, noise_level, joint_prior, *, num_samples, seed,
                  num_points=None):
  """Samples u ``[num_samples, D]`` of p(θ | γ) by quadrature (D <= 2).

  The module docstring's ``method='grid'``: a coarse grid over the prior
  box, a fine grid over the region within `GRID_LOG_CUTOFF` nats of its
  best cell, and each sample a cell of the fine grid drawn ∝ its density
  with a uniform point inside it. Arguments as `sample_u`'s, and:

  Args:
    num_points: cells per axis of each grid (int >= 4); default
      `DEFAULT_GRID_POINTS` (128 for one parameter, 40 for two).

  Returns:
    ``(u, diagnostics)``: u a ``[num_samples, D]`` tensor, diagnostics a dict
    of Python values: ``method`` ('grid'), ``num_points``,
    ``log_likelihood_evaluations`` per data set (2 · num_points^D),
    ``cell_width`` and ``std`` (per parameter, θ units, the mean over data
    sets of the fine cells' width and of the grid posterior's std) and
    ``wall_time_s``.

  Raises:
    ValueError: for more than two parameters, a bad count, or a log
      posterior that is not finite anywhere on the coarse grid.
  """
  check_field_level(joint_prior)
  checked_theta_method('grid', joint_prior)
  warn_if_uncalibrated_size(joint_prior, np.shape(shear)[-2])
  num_samples = _checks.positive_int(num_samples, 'num_samples')
  bounds = np.asarray(joint_prior.theta_bounds, np.float64)
  dim = bounds.shape[0]
  num_points = _checks.positive_int(
      DEFAULT_GRID_POINTS[dim] if num_points is None else num_points,
      'num_points', minimum=4)
  dtype = tf.as_dtype(joint_prior.dtype)
  shear = tf.convert_to_tensor(shear, dtype)
  if shear.shape.rank > 3 and shear.shape[0] != num_samples:
    raise ValueError(f'shear holds {shear.shape[0]} data sets (one per '
                     f'chain) for num_samples={num_samples}.')
  kappa_e, _ = lensing.kaiser_squires(shear)
  kappa_e = tf.reshape(kappa_e, [-1, 1] + kappa_e.shape[-2:].as_list())
  batch = kappa_e.shape[0]
  evaluate = _compiled_log_posterior(joint_prior)
  noise = tf.constant(noise_level, dtype)
  cell_seed, jitter_seed = samplers.split_seed(
      samplers.sanitize_seed(seed, salt='sample_u_grid'))
  began = time.perf_counter()
  low = np.repeat(bounds[None, :, 0], batch, axis=0)
  high = np.repeat(bounds[None, :, 1], batch, axis=0)
  centres, width = _cell_centres(low, high, num_points)
  coarse = _grid_log_posterior(evaluate, kappa_e, centres, noise, dtype)
  best = coarse.max(axis=1, keepdims=True)
  if not np.all(np.isfinite(best)):
    raise ValueError('the log posterior of theta is not finite anywhere on '
                     'the grid over the prior box (maximum '
                     f'{best.ravel().tolist()}): check the data and prior.')
  near = (coarse >= best - GRID_LOG_CUTOFF)[..., None]
  low = np.maximum(np.where(near, centres, np.inf).min(axis=1) - 1.5 * width,
                   bounds[:, 0])
  high = np.minimum(np.where(near, centres, -np.inf).max(axis=1) +
                    1.5 * width, bounds[:, 1])
  centres, width = _cell_centres(low, high, num_points)
  fine = _grid_log_posterior(evaluate, kappa_e, centres, noise, dtype)
  fine = np.where(np.isfinite(fine), fine, -np.inf)
  weights = np.exp(fine - fine.max(axis=1, keepdims=True))
  weights /= weights.sum(axis=1, keepdims=True)
  mean = np.einsum('bg,bgd->bd', weights, centres)
  variance = np.einsum('bg,bgd->bd', weights,
                       (centres - mean[:, None]) ** 2) + width**2 / 12.
  draws_per_set = num_samples if batch == 1 else 1
  cells = tf.random.stateless_categorical(
      tf.math.log(tf.constant(weights, tf.float64)), draws_per_set,
      seed=cell_seed).numpy().reshape(-1)
  owner = np.repeat(np.arange(batch), draws_per_set)
  jitter = samplers.uniform([num_samples, dim], dtype=tf.float64,
                            seed=jitter_seed).numpy()
  theta = centres[owner, cells] + (jitter - 0.5) * width[owner]
  margin = 1e-6 * (bounds[:, 1] - bounds[:, 0])  # u finite in float32.
  theta = np.clip(theta, bounds[:, 0] + margin, bounds[:, 1] - margin)
  u = theta_bijector(bounds, dtype).inverse(tf.constant(theta, dtype))
  coarseness = np.max(width / np.sqrt(variance))
  if coarseness > 1.:
    warnings.warn(
        f'the theta grid is coarse: its cells are {coarseness:.2f} posterior '
        f'standard deviations wide (num_points={num_points}); pass a larger '
        'num_points for a resolved posterior.', stacklevel=2)
  return u, dict(
      method='grid', num_points=num_points,
      log_likelihood_evaluations=2 * num_points**dim,
      cell_width=width.mean(axis=0).tolist(),
      std=np.sqrt(variance).mean(axis=0).tolist(),
      wall_time_s=time.perf_counter() - began)


def sample_theta_posterior(shear_map, joint_prior, *, num_samples=64,
                           seed=None, method=None, num_points=None,
                           num_burnin_steps=DEFAULT_NUM_BURNIN_STEPS,
                           num_results=DEFAULT_NUM_RESULTS):
  """Independent samples of p(θ | γ), κ integrated out exactly.

  For shear observed on every pixel with white noise (module docstring).

  Args:
    shear_map: a `tfp_massmap.ShearMap` of one map in the prior's dtype, its
      mask all 1 and one noise level.
    joint_prior: a `JointPrior` with ``field_log_likelihood``
      (`AmplitudeGaussianPrior`, `LearnedJointPrior` with a ratio network).
    num_samples: independent samples (HMC: one chain each).
    seed: stateless seed.
    method: ``'grid'`` (quadrature, `sample_u_grid`; D <= 2) or ``'hmc'``
      (`sample_u`); default `default_theta_method` (grid for D <= 2).
    num_points: ``'grid'``: cells per axis (default `DEFAULT_GRID_POINTS`).
    num_burnin_steps: ``'hmc'``: transitions before the kept ones (the
      first 80 % adapt the step size); default 400.
    num_results: ``'hmc'``: kept transitions per chain, for the split-R̂
      (>= 4); the samples are their last states.

  Returns:
    ``(theta, diagnostics)``: θ ``[num_samples, D]`` (a tensor in the
    prior's dtype) and the dict of `sample_u_grid`'s or `sample_u`'s
    diagnostics.

  Raises:
    ValueError: for masked or non-white data, a prior without
      ``field_log_likelihood``, a bad method or count.
  """
  conditional.joint_prior_properties(joint_prior)
  method = checked_theta_method(method, joint_prior)
  data, _ = posterior._checked_data(  # pylint: disable=protected-access
      shear_map, joint_prior, False, 'sample_theta_posterior')
  if method == 'grid':
    u, diagnostics = sample_u_grid(
        data.shear, white_noise_level(data), joint_prior,
        num_samples=num_samples, seed=seed, num_points=num_points)
  else:
    u, diagnostics = sample_u(
        data.shear, white_noise_level(data), joint_prior,
        num_samples=num_samples, seed=seed,
        num_burnin_steps=num_burnin_steps, num_results=num_results)
  return theta_bijector(joint_prior.theta_bounds,
                        joint_prior.dtype).forward(u), diagnostics


def default_theta_method(joint_prior):
  """``'grid'`` for a prior over D <= 2 parameters, else ``'hmc'``."""
  return 'grid' if len(joint_prior.theta_bounds) <= 2 else 'hmc'


def checked_theta_method(method, joint_prior):
  """``method`` (None: `default_theta_method`), checked against the prior."""
  if method is None:
    return default_theta_method(joint_prior)
  if method not in THETA_METHODS:
    raise ValueError(f'the theta method must be one of {THETA_METHODS}, got '
                     f'{method!r}.')
  if method == 'grid' and len(joint_prior.theta_bounds) > 2:
    raise ValueError(
        "the theta method 'grid' serves D <= 2 parameters; this prior has "
        f'D = {len(joint_prior.theta_bounds)}: use \'hmc\'.')
  return method

"""Synthetic problems with known answers, for tests and benchmarks.

`gaussian_problem` makes COSMOS-like data (footprint with star holes,
non-uniform noise) from a draw of the shipped Gaussian prior, observed by
`likelihood.ShearLikelihood.sample`, the one simulator of observations;
`cosmo_problem` observes a varying-cosmology lognormal map (known θ) with
white noise on every pixel, the data of the joint prior's checks.
`exact_gaussian_posterior` computes the posterior of a Gaussian prior by a
dense float64 solve, independently of the package's conjugate-gradient Wiener
filter and of its samplers: the reference their tests and benchmarks compare
with. Dense matrices hold N⁴ numbers: keep N <= 48 or so (N = 32 takes
about a second).
"""

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import survey
from tfp_massmap.priors import gaussian as gaussian_prior_lib

__all__ = [
    'cosmo_problem',
    'dense_matrix',
    'exact_gaussian_posterior',
    'gaussian_problem',
]


def dense_matrix(linear_map, n):
  """The matrix of a linear map on ``[N, N]`` maps (float64 numpy).

  Args:
    linear_map: callable taking float64 maps ``[B, N, N]`` to ``[B, ...]``.
    n: the map size N.

  Returns:
    ``[M, N²]``: column j is the image of the unit map of pixel j (row-major),
    flattened (M = N² C for an image ``[N, N, C]``).
  """
  n = _checks.positive_int(n, 'n')
  basis = np.eye(n * n).reshape(n * n, n, n)
  images = np.asarray(linear_map(tf.constant(basis)))
  return images.reshape(n * n, -1).T


def _sqrt_covariance(prior, n):
  """C^{1/2} ``[N², N²]`` of a Gaussian prior, symmetric."""
  if hasattr(prior, 'spectrum'):
    sqrt_spectrum = np.sqrt(np.asarray(prior.spectrum, np.float64))
    return dense_matrix(
        lambda x: gaussian_prior_lib.fourier_filter(x, sqrt_spectrum), n)
  if isinstance(prior, lognormal.LognormalField) and prior.shift is None:
    field = lognormal.LognormalField(None, prior.map_size,
                                     prior.pixel_scale_arcmin,
                                     power_grid=np.asarray(prior.target_power_grid,
                                                           np.float64),
                                     dtype=tf.float64)
    return dense_matrix(field.latent_from_white, n)
  raise ValueError(
      'prior must be a Gaussian prior with a spectrum (GaussianPrior) or a '
      f'LognormalField with shift None, got {prior!r}.')


def exact_gaussian_posterior(shear_map, prior, operator=None):
  """Posterior mean and covariance of κ under a Gaussian prior (dense).

  With κ ~ N(0, C) and data e = Aκ + n, n ~ N(0, N) on the observed pixels,
  the posterior is N(m, Σ) with, in whitened variables (regular on the
  degenerate map-mean mode of the prior),

    Σ = C^{1/2} (I + C^{1/2} Aᵀ N⁻¹ A C^{1/2})⁻¹ C^{1/2},  m = Σ Aᵀ N⁻¹ e.

  Args:
    shear_map: the data, a `ShearMap` or anything `shear_map.as_shear_map`
      takes (one map, no batch axes).
    prior: a `GaussianPrior` (its ``spectrum``) or a
      `lognormal.LognormalField` with ``shift=None`` (the Gaussian field).
    operator: the forward model A, ``[..., N, N] -> [..., N, N, C]``;
      default `lensing.shear_from_convergence`.

  Returns:
    (mean, covariance): float64 numpy arrays ``[N, N]`` and ``[N², N²]``
    (pixels in row-major order); the pixel std is
    ``np.sqrt(np.diag(covariance)).reshape(N, N)``.
  """
  operator = operator or lensing.shear_from_convergence
  channels = likelihood.ShearLikelihood(
      tf.zeros([4, 4], tf.float64), tf.ones([4, 4], tf.float64),
      operator=operator).event_shape[-1]
  data = shear_map_lib.as_shear_map(shear_map, dtype=tf.float64,
                                    channels=channels)
  n = data.mask.shape[-1]
  if data.shear.shape.rank != 3:
    raise ValueError('exact_gaussian_posterior takes one map [N, N, C], got '
                     f'shear of shape {data.shear.shape}.')
  noise_std = data.noise_std.numpy()
  if noise_std.ndim == 2:
    noise_std = noise_std[..., np.newaxis]
  inverse_noise = (data.mask.numpy()[..., np.newaxis] / noise_std**2 *
                   np.ones(channels)).reshape(-1)
  sqrt_c = _sqrt_covariance(prior, n)
  b = dense_matrix(operator, n) @ sqrt_c
  precision = np.eye(n * n) + b.T @ (inverse_noise[:, np.newaxis] * b)
  covariance = sqrt_c @ np.linalg.solve(precision, sqrt_c)
  mean = sqrt_c @ np.linalg.solve(
      precision, b.T @ (inverse_noise * data.shear.numpy().reshape(-1)))
  return mean.reshape(n, n), covariance


def gaussian_problem(n, pixel_scale_arcmin, seed, *, noise_ramp=(0.7, 2.0),
                     dtype=tf.float32):
  """COSMOS-like shear data of a Gaussian truth, with its prior.

  The prior is the `GaussianPrior` of the shipped ΛCDM C_ℓ
  (`cosmology.cosmos_convergence_cl`) on an N×N grid of
  ``pixel_scale_arcmin`` pixels. The survey is
  `survey.cosmos_like_survey(n, pixel_scale_arcmin, seed=seed)` (tilted
  footprint, star holes, Poisson galaxy counts), with its noise std
  multiplied by a ramp along x from ``noise_ramp[0]`` to ``noise_ramp[1]``
  (non-uniform noise). The truth is a float64 draw of the prior (seed
  ``(seed, 0)``) and the shear is `ShearLikelihood(truth, noise_std,
  mask).sample(seed=(seed, 1))`.

  Args:
    n: map size N in pixels (the footprint, 1.64 deg², must fit in the map).
    pixel_scale_arcmin: pixel side in arcmin.
    seed: integer seed of the survey, the truth and the noise.
    noise_ramp: (first, last) noise multipliers across the columns.
    dtype: float32 or float64, the dtype of the data and the prior.

  Returns:
    (shear_map, truth, prior): a `ShearMap` (numpy arrays of ``dtype``,
    with counts and the pixel scale, no WCS), the true κ ``[N, N]`` (float64
    numpy) and the `GaussianPrior` (``dtype``, with its pixel scale).
  """
  dtype = _checks.float_dtype(dtype, 'dtype')
  ell, cl = cosmology.cosmos_convergence_cl()
  prior64 = gaussian_prior_lib.GaussianPrior.from_power_spectrum(
      ell, cl, n, pixel_scale_arcmin, dtype=tf.float64)
  data = survey.cosmos_like_survey(n, pixel_scale_arcmin, seed=seed)
  ramp = np.linspace(*noise_ramp, n)[np.newaxis, :, np.newaxis]
  noise_std = data['noise_std'].astype(np.float64) * ramp
  mask = data['mask']
  truth = prior64.sample(seed=(seed, 0))
  shear = likelihood.ShearLikelihood(truth, noise_std, mask).sample(
      seed=(seed, 1))
  np_dtype = dtype.as_numpy_dtype
  observed = shear_map_lib.ShearMap(
      shear=shear.numpy().astype(np_dtype),
      noise_std=noise_std.astype(np_dtype), mask=mask.astype(np_dtype),
      counts=data['counts'], pixel_scale_arcmin=float(pixel_scale_arcmin))
  prior = (prior64 if dtype == tf.float64 else
           gaussian_prior_lib.GaussianPrior.from_power_spectrum(
               ell, cl, n, pixel_scale_arcmin, dtype=dtype))
  return observed, truth.numpy(), prior


def cosmo_problem(seed, map_size, pixel_scale_arcmin, noise_std, noise_seed):
  """A ``cosmo_<N>`` map of known θ, observed with white noise everywhere.

  Args:
    seed: the map's seed (`lognormal.cosmo_maps`: its θ = (Ωm, σ8), its
      spectrum, shift and white noise).
    map_size: N in pixels.
    pixel_scale_arcmin: pixel side in arcmin.
    noise_std: per-component shape noise σ_pix on every pixel
      (dimensionless).
    noise_seed: stateless seed of `ShearLikelihood.sample`.

  Returns:
    (θ ``[2]`` float64 numpy, the true κ ``[N, N]`` float64 numpy, a float32
    `ShearMap` with a full mask).
  """
  maps = lognormal.cosmo_maps([seed], map_size, pixel_scale_arcmin)
  truth = maps['kappa'][0].astype(np.float64)
  ones = np.ones([map_size, map_size])
  shear = likelihood.ShearLikelihood(truth, noise_std * ones, ones).sample(
      seed=noise_seed).numpy()
  observed = shear_map_lib.ShearMap(
      shear=shear.astype(np.float32),
      noise_std=np.full([map_size, map_size], noise_std, np.float32),
      mask=np.ones([map_size, map_size], np.float32),
      pixel_scale_arcmin=pixel_scale_arcmin)
  return (np.array([maps['omega_m'][0], maps['sigma8'][0]]), truth,
          observed)


def perturb_weights(model, seed=7, scale=0.1):
  """Adds N(0, scale²) to every weight of a Keras model, in place; returns it.

  Gives an untrained network (whose read-out layers start at zero) a
  non-trivial output for tests, the same for the same seed.
  """
  rng = np.random.default_rng(seed)
  model.set_weights([w + scale * rng.standard_normal(w.shape).astype(w.dtype)
                     for w in model.get_weights()])
  return model

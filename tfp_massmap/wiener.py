"""Wiener filter and exact Gaussian-posterior samples for masked shear data.

Model (docs/design.md §1): shear data ``e = A κ + n`` with A the shear operator
(``lensing.shear_from_convergence``, periodic), per-pixel, per-component
Gaussian noise ``n ~ N(0, N)`` with ``N⁻¹ = 1 / noise_std²`` on the observed
pixels and 0 elsewhere (the 0/1 mask of `shear_map`), and a stationary
Gaussian prior ``κ ~ N(0, S)`` (``priors.GaussianPrior``). The
posterior is Gaussian with precision
``Q = S⁻¹ + Aᵀ N⁻¹ A`` and mean ``Q⁻¹ Aᵀ N⁻¹ e`` (the Wiener filter); Aᵀ is
the E-mode of ``lensing.kaiser_squires``.

Both are computed by preconditioned conjugate gradients in whitened
variables ``κ = S^{1/2} z``:

    (I + S^{1/2} Aᵀ N⁻¹ A S^{1/2}) z = S^{1/2} Aᵀ N⁻¹ e,

a well-conditioned system (eigenvalues >= 1) that stays regular on the
degenerate modes of the prior (S_k = 0, always the map mean k = 0): there
z = 0, so the returned maps have zero mean; the mean is not constrained by
shear (mass-sheet degeneracy). The preconditioner replaces N⁻¹ by its average
over all pixels per shear component (c₁, c₂; the mask fraction times the mean
inverse variance over the observed pixels), which makes the operator Fourier
diagonal, ``1 + S_k (c₁ |w₁(k)|² + c₂ |w₂(k)|²)`` with w₁, w₂ the Fourier
weights of γ₁, γ₂ (cos 2φ_k and sin 2φ_k off the Nyquist lines), and exact for
uniform noise without a mask.

Convergence is measured by the relative residual ``‖b − M z‖ / ‖b‖`` of
the whitened system, recomputed from the final iterate (not the CG
recurrence). Rounding limits it to about 1e-7 in float32 and 1e-15 in
float64 (measured on the 360² COSMOS problem); below that a solve stops on
the recurrence but reports ``converged = False``.

The public functions hold no data-dependent Python control flow (the loop is
an explicit ``tf.while_loop``), so they are marked not to be converted by
AutoGraph: inside ``tf.function`` this cuts tracing time about five-fold.
"""

import collections
import warnings

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_massmap import _checks
from tfp_massmap import lensing
from tfp_massmap import priors
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap.mcmc import results
from tfp_massmap.priors import gaussian as gaussian_prior_lib

__all__ = [
    'WienerFilterInfo',
    'wiener_filter',
    'gaussian_posterior_samples',
]


class WienerFilterInfo(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        'WienerFilterInfo', ['iterations', 'relative_residual', 'converged'])):
  """Solver diagnostics, one entry per solved map (the batch shape).

  Attributes:
    iterations: int32, CG iterations used until that map converged (or the
      maximum).
    relative_residual: ‖b − M z‖ / ‖b‖ of the whitened system at the
      returned solution (dimensionless; 0 when b = 0).
    converged: bool, ``relative_residual <= tol``.
  """
  __slots__ = ()


_COMPLEX = {tf.float32: tf.complex64, tf.float64: tf.complex128}

_System = collections.namedtuple(
    '_System', ['data', 'noise_std', 'inverse_noise', 'sqrt_spectrum',
                'preconditioner'])


def _check_dtype(x, dtype, name):
  """Raises if ``x`` declares a float dtype other than the prior's."""
  declared = _checks.declared_float_dtype(x)
  if declared is not None and declared != dtype:
    _checks.same_float_dtype(
        x, dtype, name, 'the prior',
        remedy=(f', or build the prior in {declared.name} (GaussianPrior.'
                f'from_power_spectrum(..., dtype=tf.{declared.name}))'))


def _check_prior(prior, noise_std, caller):
  """Raises unless ``prior`` is a GaussianPrior given by keyword."""
  if prior is None or isinstance(noise_std, gaussian_prior_lib.GaussianPrior):
    raise ValueError(
        f'prior is required: pass a tfp_massmap.GaussianPrior by keyword, e.g. '
        f'{caller}(shear_map, prior=prior) or '
        f'{caller}(shear, noise_std, mask, prior).')
  if not isinstance(prior, gaussian_prior_lib.GaussianPrior):
    raise ValueError(
        f'prior must be a tfp_massmap.GaussianPrior, got {type(prior).__name__}.')


def _shear_data(shear, noise_std, mask, prior, caller):
  """The checked `ShearMap` of the data, in the prior's dtype.

  A ShearMap-like ``shear`` is cast to the prior's dtype; separate arrays
  must already have the prior's float dtype (`shear_map.as_shear_map`). The
  prior must fit the data (`priors.check_prior`: map size, and pixel scale
  when both know theirs).
  """
  _check_prior(prior, noise_std, caller)
  if not shear_map_lib.is_shear_map(shear):
    _check_dtype(shear, prior.dtype, 'shear')
    _check_dtype(noise_std, prior.dtype, 'noise_std')
  data = shear_map_lib.as_shear_map(shear, noise_std, mask, dtype=prior.dtype)
  priors.check_prior(prior, data, allow_pixel_scale_mismatch=None)
  return data


def _set_up(data, prior):
  """The whitened system's pieces, from checked data and a GaussianPrior."""
  dtype = prior.dtype
  n = data.shear.shape[-2]
  noise_std = data.noise_std
  inverse_noise = shear_map_lib.inverse_variance(data)
  try:
    tf.broadcast_static_shape(
        tf.broadcast_static_shape(data.shear.shape[:-3], noise_std.shape[:-3]),
        tf.broadcast_static_shape(data.mask.shape[:-2],
                                  prior.spectrum.shape[:-2]))
  except ValueError:
    raise ValueError(
        'the leading (batch) axes must broadcast; got shear '
        f'{data.shear.shape}, noise_std {data.noise_std.shape}, mask '
        f'{data.mask.shape}, prior.spectrum {prior.spectrum.shape}.') from None

  spectrum = tf.convert_to_tensor(prior.spectrum)
  # |w_i(k)|², the Fourier weights of the shear components (γ_i = F⁻¹[w_i F κ]),
  # read off A applied to a unit impulse: cos² 2φ_k and sin² 2φ_k, except on
  # the Nyquist lines of an even grid, where A puts the whole mode in γ1
  # (lensing module docstring).
  impulse = tf.scatter_nd([[0, 0]], tf.ones([1], dtype), [n, n])
  weights = tf.signal.fft2d(tf.cast(
      tf.transpose(lensing.shear_from_convergence(impulse), [2, 0, 1]),
      _COMPLEX[dtype]))
  cos2, sin2 = tf.unstack(tf.math.real(weights * tf.math.conj(weights)))
  mean_inverse = tf.reduce_mean(inverse_noise, axis=[-3, -2])  # [..., 2]
  effective = (mean_inverse[..., 0, tf.newaxis, tf.newaxis] * cos2 +
               mean_inverse[..., 1, tf.newaxis, tf.newaxis] * sin2)
  preconditioner = 1. / (1. + spectrum * effective)
  return _System(data=data.shear, noise_std=noise_std,
                 inverse_noise=inverse_noise,
                 sqrt_spectrum=tf.sqrt(spectrum), preconditioner=preconditioner)


def _whitened_adjoint(system, shear_weighted):
  """S^{1/2} Aᵀ applied to N⁻¹-weighted shear ``[..., N, N, 2]``."""
  kappa_e, _ = lensing.kaiser_squires(shear_weighted)
  return gaussian_prior_lib.fourier_filter(kappa_e, system.sqrt_spectrum)


def _whitened_operator(system, z):
  """M z = z + S^{1/2} Aᵀ N⁻¹ A S^{1/2} z."""
  kappa = gaussian_prior_lib.fourier_filter(z, system.sqrt_spectrum)
  shear = lensing.shear_from_convergence(kappa)
  return z + _whitened_adjoint(system, system.inverse_noise * shear)


def _check_solver_args(tol, max_iterations):
  tol = _checks.positive_scalar(tol, 'tol')
  if (isinstance(max_iterations, bool) or not isinstance(
      max_iterations, (int, np.integer)) or max_iterations < 1):
    raise ValueError(
        f'max_iterations must be a positive integer, got {max_iterations!r}.')
  return tol, int(max_iterations)


def _warn_if_not_converged(caller, info, tol, max_iterations):
  """RuntimeWarning when a concrete solve ended above tol; no-op in graphs."""
  if not tf.executing_eagerly():
    return
  failed = ~np.asarray(info.converged)
  if not failed.any():
    return
  residual = np.asarray(info.relative_residual)[failed]
  iterations = np.asarray(info.iterations)[failed]
  warnings.warn(
      f'{caller} did not converge for {int(failed.sum())} of {failed.size} '
      f'map(s): relative residual up to {float(residual.max()):.3g} > tol = '
      f'{tol:g} after {int(iterations.max())} iteration(s) (max_iterations = '
      f'{max_iterations}). Raise max_iterations, or tol if it is below the '
      'rounding floor (about 1e-7 in float32, 1e-15 in float64); '
      'info.converged says which maps.', RuntimeWarning, stacklevel=4)


@tf.function(autograph=False)
def _conjugate_gradients(system, rhs, z0, tol, max_iterations):
  """Batched PCG on M z = rhs; each map stops updating once converged.

  ``tol`` and ``max_iterations`` are tensors, so this is compiled once per
  shape and dtype of the maps; eager callers run the loop at graph speed, and
  inside a caller's ``tf.function`` it is inlined.
  """

  def dot(a, b):
    return tf.reduce_sum(a * b, axis=[-2, -1])

  def expand(v):
    return v[..., tf.newaxis, tf.newaxis]

  def precondition(r):
    return gaussian_prior_lib.fourier_filter(r, system.preconditioner)

  def safe_divide(a, b):
    return tf.where(b > 0, a / tf.where(b > 0, b, tf.ones_like(b)),
                    tf.zeros_like(a))

  rhs_norm = tf.sqrt(dot(rhs, rhs))
  threshold = tol * rhs_norm
  r = rhs - _whitened_operator(system, z0)
  y = precondition(r)
  ry = dot(r, y)
  done = tf.sqrt(dot(r, r)) <= threshold
  iterations = tf.zeros_like(rhs_norm, dtype=tf.int32)

  def cond(i, z, r, p, ry, done, iterations):
    del z, r, p, ry, iterations
    return (i < max_iterations) & ~tf.reduce_all(done)

  def body(i, z, r, p, ry, done, iterations):
    mp = _whitened_operator(system, p)
    alpha = tf.where(done, tf.zeros_like(ry), safe_divide(ry, dot(p, mp)))
    z = z + expand(alpha) * p
    r = r - expand(alpha) * mp
    iterations = iterations + tf.cast(~done, tf.int32)
    done = done | (tf.sqrt(dot(r, r)) <= threshold)
    y = precondition(r)
    ry_new = dot(r, y)
    beta = tf.where(done, tf.zeros_like(ry), safe_divide(ry_new, ry))
    p = y + expand(beta) * p
    return i + 1, z, r, p, ry_new, done, iterations

  _, z, _, _, _, _, iterations = tf.while_loop(
      cond, body, (tf.constant(0), z0, r, y, ry, done, iterations))
  residual = rhs - _whitened_operator(system, z)
  residual_norm = tf.sqrt(dot(residual, residual))
  relative = tf.where(rhs_norm > 0, safe_divide(residual_norm, rhs_norm),
                      residual_norm)
  info = WienerFilterInfo(iterations=iterations, relative_residual=relative,
                          converged=relative <= tol)
  return z, info


@tf.autograph.experimental.do_not_convert
def wiener_filter(shear, noise_std=None, mask=None, prior=None, tol=1e-6,
                  max_iterations=1000, initial=None, name=None):
  """Posterior mean of κ under a Gaussian prior: the Wiener filter.

  Solves ``(S⁻¹ + Aᵀ N⁻¹ A) κ = Aᵀ N⁻¹ e`` by preconditioned conjugate
  gradients in whitened variables (see the module docstring), batched over
  leading axes; works eagerly and inside ``tf.function``. Called eagerly, a
  solve that ends above ``tol`` (``max_iterations`` reached, or the rounding
  floor of the dtype) emits a ``RuntimeWarning`` with the iterations and the
  relative residual reached; inside ``tf.function`` read ``info.converged``.

  Args:
    shear: observed mean ellipticity ``[..., N, N, 2]`` (dimensionless);
      values on masked pixels are ignored (NaN allowed there). Or a
      `shear_map.ShearMap` (or any object with attributes ``shear``,
      ``noise_std``, ``mask``, optionally ``pixel_scale_arcmin``), then leave
      ``noise_std`` and ``mask`` None and pass ``prior`` by keyword; its
      arrays are cast to the prior's dtype, and its pixel scale must match
      the prior's within `priors.PIXEL_SCALE_TOLERANCE` when both are known
      (`priors.check_prior`).
    noise_std: per-pixel noise standard deviation of the shear, ``[..., N, N]``
      (both components) or ``[..., N, N, 2]`` (per component, like COSMOS
      std1/std2); > 0 on observed pixels, ignored (any value) where mask = 0.
    mask: ``[..., N, N]`` (any real or bool dtype), the 0/1 indicator of
      observed pixels (`shear_map`): ``N⁻¹ = 1 / noise_std²`` where it is 1,
      0 where it is 0. Default: every pixel observed.
    prior: a ``GaussianPrior`` with event shape ``[N, N]`` (required); its
      dtype is the computation dtype. ``shear``, ``noise_std`` and
      ``initial`` given as tensors or numpy arrays must have that dtype
      (Python numbers and lists are converted).
    tol: target relative residual of the whitened system (> 0).
    max_iterations: maximum CG iterations (Python int >= 1).
    initial: optional starting guess for κ, ``[..., N, N]``.
    name: optional name scope.

  Returns:
    (kappa_mean, info): ``kappa_mean`` ``[..., N, N]`` (batch axes broadcast
    over all inputs; zero map mean), ``info`` a ``WienerFilterInfo``.

  Raises:
    ValueError: for a missing prior or one that is not a ``GaussianPrior``,
      a float input whose dtype differs from the prior's (the message names
      the input and the cast that fixes it), a ShearMap whose pixel scale
      differs from the prior's, mismatched or non-square shapes,
      non-broadcasting batch axes, a mask value other than 0 and 1, a
      noise_std that is not finite and > 0 or a non-finite shear on an
      observed pixel, a map with no observed pixel (`shear_map.as_shear_map`
      gives these checks and messages), or bad tol / max_iterations. Value
      checks run eagerly only; inside
      ``tf.function`` only shapes and dtypes are checked.

  Warns:
    RuntimeWarning: (eagerly) when some map did not reach ``tol``.
  """
  with tf.name_scope(name or 'wiener_filter'):
    tol, max_iterations = _check_solver_args(tol, max_iterations)
    system = _set_up(
        _shear_data(shear, noise_std, mask, prior, 'wiener_filter'), prior)
    rhs = _whitened_adjoint(system, system.inverse_noise * system.data)
    if initial is None:
      z0 = tf.zeros_like(rhs)
    else:
      _check_dtype(initial, prior.dtype, 'initial')
      initial = tf.cast(tf.convert_to_tensor(initial, name='initial'),
                        prior.dtype)
      _checks.same_map_shape(initial.shape, rhs.shape, 'initial', 'shear')
      _checks.finite(initial, 'initial')
      sqrt_s = system.sqrt_spectrum
      inverse_sqrt_s = tf.where(
          sqrt_s > 0, 1. / tf.where(sqrt_s > 0, sqrt_s, tf.ones_like(sqrt_s)),
          tf.zeros_like(sqrt_s))
      z0 = gaussian_prior_lib.fourier_filter(initial, inverse_sqrt_s)
      z0 = z0 + tf.zeros_like(rhs)
    z, info = _conjugate_gradients(system, rhs, z0, tf.constant(tol, rhs.dtype),
                                   tf.constant(max_iterations))
    _warn_if_not_converged('wiener_filter', info, tol, max_iterations)
    return gaussian_prior_lib.fourier_filter(z, system.sqrt_spectrum), info


@tf.autograph.experimental.do_not_convert
def gaussian_posterior_samples(shear, noise_std=None, mask=None, prior=None,
                               num_samples=None, seed=None, tol=1e-6,
                               max_iterations=1000, name=None):
  """Exact samples of the Gaussian posterior p(κ | e), by perturb-and-solve.

  Each sample solves the Wiener system with perturbed inputs: data
  ``e + n'`` with ``n' ~ N(0, N)`` and a prior term ``S⁻¹ s`` with
  ``s ~ N(0, S)``, i.e. ``κ = Q⁻¹ (Aᵀ N⁻¹ (e + n') + S⁻¹ s)``, whose
  distribution is ``N(Q⁻¹ Aᵀ N⁻¹ e, Q⁻¹)`` exactly (up to the CG tolerance).
  In whitened variables the prior term is a white map w ~ N(0, I). The map
  mean (a degenerate prior direction) is zero in every sample. Like
  ``wiener_filter``, warns (eagerly) when a solve ends above ``tol``. The
  result is the `mcmc.PosteriorSamples` every sampler of the package returns
  (same summaries, same `credible_interval`).

  Args:
    shear, noise_std, mask, prior: as in ``wiener_filter`` (a ShearMap-like
      ``shear`` included).
    num_samples: number of samples (Python int >= 1; required).
    seed: stateless seed (e.g. ``(1, 2)`` or a shape-[2] int tensor;
      required).
    tol, max_iterations: CG settings, as in ``wiener_filter``; keep tol well
      below the Monte-Carlo error you care about.
    name: optional name scope.

  Returns:
    A `mcmc.PosteriorSamples`: ``samples`` ``[num_samples, ..., N, N]``
    (independent), their mean, std and 68 % / 95 % credible intervals
    (None for one sample), no trace, and ``diagnostics`` holding
    ``'solver_info'``, the ``WienerFilterInfo`` of the solves (shape
    ``[num_samples, ...]``), and ``'num_samples'``.

  Raises:
    ValueError: as ``wiener_filter``, and for a missing seed or a
      num_samples that is not a positive integer.

  Warns:
    RuntimeWarning: (eagerly) when some sample's solve did not reach ``tol``.
  """
  with tf.name_scope(name or 'gaussian_posterior_samples'):
    tol, max_iterations = _check_solver_args(tol, max_iterations)
    if (isinstance(num_samples, bool) or
        not isinstance(num_samples, (int, np.integer)) or num_samples < 1):
      raise ValueError(
          f'num_samples must be a positive integer, got {num_samples!r}.')
    if seed is None:
      raise ValueError('seed is required: a stateless seed such as (1, 2), so '
                       'that the samples are reproducible.')
    system = _set_up(_shear_data(shear, noise_std, mask, prior,
                                 'gaussian_posterior_samples'), prior)
    noise_seed, prior_seed = samplers.split_seed(
        samplers.sanitize_seed(seed), n=2)
    dtype = prior.dtype
    data_rhs = _whitened_adjoint(system, system.inverse_noise * system.data)
    shape = tf.concat([[num_samples], tf.shape(data_rhs)], axis=0)
    noise = system.noise_std * samplers.normal(
        tf.concat([shape, [2]], axis=0), dtype=dtype, seed=noise_seed)
    white = samplers.normal(shape, dtype=dtype, seed=prior_seed)
    rhs = (data_rhs + _whitened_adjoint(system, system.inverse_noise * noise) +
           white)
    z, info = _conjugate_gradients(system, rhs, tf.zeros_like(rhs),
                                   tf.constant(tol, dtype),
                                   tf.constant(max_iterations))
    _warn_if_not_converged('gaussian_posterior_samples', info, tol,
                           max_iterations)
    return results.from_samples(
        gaussian_prior_lib.fourier_filter(z, system.sqrt_spectrum),
        dict(solver_info=info, num_samples=num_samples))

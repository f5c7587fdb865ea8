"""Sparse-prior and total-variation MAP mass maps by monotone FISTA.

Every map here is the minimiser of a convex objective, in χ² units
(dimensionless),

    F(κ) = ½ Σ_pix m (Aκ − e)² / σ_pix²  +  Σ_p Λ(p) ‖(Dκ)(p)‖  [+ ι(κ ≥ 0)],

with A the shear operator (`lensing.shear_from_convergence`, periodic; its
adjoint is the E-mode of `lensing.kaiser_squires`), e the observed mean
ellipticity, m the 0/1 mask of observed pixels (`shear_map`) and σ_pix the
per-pixel noise std (N⁻¹ = m / σ_pix², as in `wiener.wiener_filter`), and a
penalty that is

* `sparse_map`: the weighted ℓ1 norm of the starlet wavelet planes of κ
  (D = W, the J wavelet planes of `starlet.starlet_transform`; the coarse
  plane is not penalised). This is the *analysis* form, as in GLIMPSE
  (Lanusse et al. 2016, A&A 591, A2);
* `tv_map`: the isotropic total variation (D = periodic forward differences,
  ‖·‖ the Euclidean norm of the 2-D gradient at each pixel).

The smooth data term has a gradient Aᵀ N⁻¹ (Aκ − e) with Lipschitz constant
L = max N⁻¹ (A has unit norm), so the proximal-gradient step is t = 1/L. The
minimisation is the monotone FISTA of Beck & Teboulle (2009, IEEE TIP 18,
2419; "MFISTA"): the objective F(x_k) never increases. The proximal operator
of the penalty has no closed form for the redundant starlet frame or for TV:
it is computed by a fixed number of iterations of the fast gradient
projection on its dual (the same paper's FGP; for TV this is Chambolle's
dual problem), warm-started from the previous outer iteration. The optional
positivity constraint enters that inner projection.

Weights follow the noise. The noise n of the data propagates into the
gradient step as t Aᵀ N⁻¹ n, whose starlet coefficients at scale j have a
per-pixel std s_j(p), computed exactly (not by Monte Carlo) as the periodic
convolution of the inverse-variance map with the squared impulse responses
of W_j Aᵀ. `sparse_thresholds` returns the soft thresholds τ_j(p) = k s_j(p)
(convergence units; k = ``threshold_sigma``) that the proximal step applies,
so a coefficient survives a step when it exceeds k times its noise; the ℓ1
weights in F are Λ_j = L τ_j. For TV the threshold is ``regularisation``
times the per-pixel std of t Aᵀ N⁻¹ n (for uniform noise without a mask,
that std is σ_pix: the weight is in units of the pixel noise). Thresholds
scale linearly with the noise level. For this propagation only, pixels
without data take the mean observed N⁻¹: with N⁻¹ = 0 there, the weights
would vanish in the gaps and leave the map unregularised exactly where no
data constrain it (slow convergence, large artefacts); with the mean, gaps
are regularised like a typical observed area (sparse or TV inpainting).

`mcalens_map` models κ = κ_G + κ_S, a Gaussian field (prior
`priors.GaussianPrior`) plus a sparse component, in the spirit of
MCALens (Starck et al. 2021, A&A 649, A99), by block-coordinate descent on
½χ² + ½ κ_Gᵀ S⁻¹ κ_G + ‖Λ W κ_S‖₁ (here W includes the coarse plane, so
that smooth large scales belong to the Gaussian component unless
significant): an exact Wiener step for κ_G on the data minus A κ_S, then
MFISTA iterations for κ_S on the data minus A κ_G. The objective is jointly
convex; where no starlet coefficient of the Wiener residual is significant
at k σ, its minimiser has κ_S = 0 and the map is the Wiener filter.

The map mean (k = 0) is not constrained by shear (mass-sheet degeneracy);
without positivity, the maps returned have zero mean.
"""

import collections

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.mcmc.internal import util as mcmc_util

from tfp_massmap import _checks
from tfp_massmap import lensing
from tfp_massmap import priors
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import starlet
from tfp_massmap import wiener

__all__ = [
    'ProximalMapInfo',
    'sparse_thresholds',
    'sparse_map',
    'tv_map',
    'MCALensInfo',
    'mcalens_map',
]

# ‖D‖² for the dual step: the starlet frame has norm 1 (see `starlet`), the
# periodic forward-difference gradient has norm² 8 (reached at k = (π, π)).
_STARLET_NORM_SQ = 1.0
_GRADIENT_NORM_SQ = 8.0


class ProximalMapInfo(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        'ProximalMapInfo',
        ['iterations', 'objective', 'relative_change', 'converged'])):
  """Convergence report of a proximal MAP solver.

  Attributes:
    iterations: int32 scalar, outer iterations run (shared by the batch).
    objective: ``[iterations, ...]`` objective F after each iteration, per map
      (χ² units, dimensionless); non-increasing along the first axis.
    relative_change: ``[iterations, ...]`` ‖z_k − y_k‖ / ‖z_k‖, the length of
      each proximal-gradient step relative to the map (0 at a minimiser).
    converged: bool ``[...]``, the last relative change is <= tol.
  """
  __slots__ = ()


_Problem = collections.namedtuple(
    '_Problem', ['data', 'inverse_variance', 'lipschitz'])


def _set_up(shear, noise_std, mask):
  """Checks the data (`shear_map.as_shear_map`); returns them and a `_Problem`.

  ``shear`` is an array ``[..., N, N, 2]`` with ``noise_std`` and ``mask``,
  or a ShearMap-like object (then ``noise_std`` and ``mask`` are None). The
  dtype is the shear's; separate float arrays must share it.
  """
  data = shear_map_lib.as_shear_map(shear, noise_std, mask)
  inverse = shear_map_lib.inverse_variance(data)
  shear = data.shear + tf.zeros_like(inverse)
  inverse = inverse + tf.zeros_like(shear)
  lipschitz = tf.reduce_max(inverse, axis=[-3, -2, -1])[..., tf.newaxis,
                                                         tf.newaxis]
  return data, _Problem(shear, inverse, lipschitz)


def _data_term(problem, kappa):
  """½ Σ N⁻¹ (Aκ − e)² per map."""
  residual = lensing.shear_from_convergence(kappa) - problem.data
  return 0.5 * tf.reduce_sum(problem.inverse_variance * residual**2,
                             axis=[-3, -2, -1])


def _data_gradient(problem, kappa):
  return lensing.kaiser_squires(problem.inverse_variance * (
      lensing.shear_from_convergence(kappa) - problem.data))[0]


def _adjoint_noise_std(inverse_variance, transform):
  """Per-pixel std of transform(Aᵀ u), u ~ N(0, N⁻¹) (u = N⁻¹ n), exactly.

  Every operator involved is a periodic convolution, so the variance at p is
  Σ_c Σ_q K_c(p − q)² N⁻¹_c(q), K_c the impulse response of transform ∘ Aᵀ
  from shear component c.

  Args:
    inverse_variance: ``[..., N, N, 2]``.
    transform: maps ``[2, N, N]`` to ``[2, ..., N, N]`` (any inner axes),
      linear and translation invariant.

  Returns:
    ``[..., inner axes..., N, N]`` standard deviations.
  """
  dtype = inverse_variance.dtype
  n = inverse_variance.shape[-2]
  impulses = np.zeros([2, n, n, 2])
  impulses[0, 0, 0, 0] = impulses[1, 0, 0, 1] = 1.0
  kernels = transform(lensing.kaiser_squires(tf.constant(impulses, dtype))[0])
  complex_dtype = tf.complex64 if dtype == tf.float32 else tf.complex128
  kernel_spec = tf.signal.fft2d(tf.cast(kernels**2, complex_dtype))
  inner_rank = kernels.shape.rank - 3
  weights = tf.experimental.numpy.moveaxis(inverse_variance, -1, -3)
  weights = tf.reshape(weights, tf.concat(
      [tf.shape(weights)[:-2], tf.ones([inner_rank], tf.int32), [n, n]], 0))
  weight_spec = tf.signal.fft2d(tf.cast(weights, complex_dtype))
  variance = tf.reduce_sum(
      tf.math.real(tf.signal.ifft2d(kernel_spec * weight_spec)),
      axis=-3 - inner_rank)
  return tf.sqrt(tf.maximum(variance, tf.zeros([], dtype)))


def _gap_filled(inverse_variance):
  """N⁻¹ with unobserved pixels set to the mean observed N⁻¹ (per component).

  Used only to propagate noise into penalty weights: with the true N⁻¹ = 0 in
  a gap, the propagated noise, hence the weight, would vanish there and leave
  the map unregularised where no data constrain it; with the mean, gaps are
  regularised like a typical observed area (sparse or TV inpainting).
  """
  observed = inverse_variance > 0
  count = tf.reduce_sum(tf.cast(observed, inverse_variance.dtype), axis=[-3, -2],
                        keepdims=True)
  mean = tf.reduce_sum(inverse_variance, axis=[-3, -2], keepdims=True) / count
  return tf.where(observed, inverse_variance, mean + tf.zeros_like(inverse_variance))


def _penalised_planes(kappa, num_scales, coarse):
  """Starlet planes ``[..., P, N, N]``: the J wavelet planes (+ the coarse)."""
  planes = starlet.starlet_transform(kappa, num_scales)
  return planes if coarse else planes[..., :num_scales, :, :]


def _penalised_adjoint(planes, coarse):
  if not coarse:
    planes = tf.concat([planes, tf.zeros_like(planes[..., :1, :, :])], axis=-3)
  return starlet.starlet_adjoint(planes)


def _threshold_sigma(threshold_sigma, num_planes, dtype):
  k = np.asarray(threshold_sigma, dtype=np.float64)
  if k.ndim == 0:
    k = np.full([num_planes], float(k))
  if k.shape != (num_planes,) or not np.all(np.isfinite(k)) or np.any(k < 0):
    raise ValueError(
        'threshold_sigma must be a number >= 0 or one per penalised starlet '
        f'plane ({num_planes} values >= 0), got {threshold_sigma!r}.')
  return tf.constant(k[:, np.newaxis, np.newaxis], dtype)


def _sparse_thresholds(inverse_variance, lipschitz, num_scales, threshold_sigma,
                       coarse=False):
  """Thresholds k σ_j (p) in convergence units, ``[..., P, N, N]``; see the docstring."""
  num_planes = num_scales + 1 if coarse else num_scales
  k = _threshold_sigma(threshold_sigma, num_planes, inverse_variance.dtype)
  std = _adjoint_noise_std(_gap_filled(inverse_variance),
                           lambda x: _penalised_planes(x, num_scales, coarse))
  return k * std / lipschitz[..., tf.newaxis, :, :]


def sparse_thresholds(noise_std, mask, num_scales=5, threshold_sigma=3.0,
                      name=None):
  """Per-scale, per-pixel soft thresholds of `sparse_map` (convergence units).

  τ_j(p) = k_j · std[W_j(t Aᵀ N⁻¹ n)](p), with n the shear noise
  (std ``noise_std``), N⁻¹ = mask / noise_std², t = 1 / max N⁻¹ the gradient
  step and W_j the starlet wavelet plane j. For uniform noise σ without a mask
  this is exactly k_j σ times `starlet.starlet_noise_levels` (the wavelet
  planes carry no map mean, the only mode Aᵀ drops); multiplying the noise
  by c multiplies every threshold by c.

  Pixels without data (mask = 0) take the mean observed N⁻¹ in this
  propagation (module docstring), so a hole in an otherwise uniform survey
  does not change the thresholds.

  Args:
    noise_std: per-pixel shear noise std ``[..., N, N]`` or ``[..., N, N, 2]``
      (dimensionless; > 0 where mask = 1, ignored elsewhere).
    mask: ``[..., N, N]``, the 0/1 indicator of observed pixels (N⁻¹ =
      mask / noise_std²).
    num_scales: number J of wavelet scales (2^J <= N).
    threshold_sigma: k, a number or one per scale (finest first), >= 0.
    name: optional name scope.

  Returns:
    float32 tensor ``[..., J, N, N]`` (float64 if ``noise_std`` is float64).
  """
  with tf.name_scope(name or 'sparse_thresholds'):
    noise_std = tf.convert_to_tensor(noise_std, name='noise_std')
    dtype = (noise_std.dtype if noise_std.dtype in (tf.float32, tf.float64)
             else tf.float32)
    n = _checks.square_map_shape(np.shape(mask), 'mask')
    _, problem = _set_up(tf.zeros([n, n, 2], dtype), tf.cast(noise_std, dtype),
                         mask)
    inverse, lipschitz = problem.inverse_variance, problem.lipschitz
    num_scales = _checks.positive_int(num_scales, 'num_scales')
    return _sparse_thresholds(inverse, lipschitz, num_scales, threshold_sigma)


def _tv_thresholds(problem, regularisation):
  std = _adjoint_noise_std(_gap_filled(problem.inverse_variance), lambda x: x)
  return tf.constant(regularisation, problem.data.dtype) * std / problem.lipschitz


def _gradient(kappa):
  """Periodic forward differences ``[..., 2, N, N]`` (x then y)."""
  return tf.stack([tf.roll(kappa, -1, axis=-1) - kappa,
                   tf.roll(kappa, -1, axis=-2) - kappa], axis=-3)


def _gradient_adjoint(field):
  px, py = field[..., 0, :, :], field[..., 1, :, :]
  return (tf.roll(px, 1, axis=-1) - px) + (tf.roll(py, 1, axis=-2) - py)


def _clip_box(q, bound):
  return tf.clip_by_value(q, -bound, bound)


def _clip_disc(q, bound):
  """Projects each pixel's 2-vector q[..., :, p] on the disc of radius bound."""
  norm = tf.sqrt(tf.reduce_sum(q**2, axis=-3, keepdims=True))
  scale = tf.minimum(tf.ones_like(norm), bound / tf.maximum(
      norm, tf.constant(np.finfo(q.dtype.as_numpy_dtype).tiny, q.dtype)))
  return q * scale


class _Penalty(collections.namedtuple(
    '_Penalty', ['operator', 'adjoint', 'project', 'norm_sq', 'norm'])):
  """Σ_p Λ(p) ‖(Dκ)(p)‖: D, Dᵀ, the dual projection, ‖D‖² and the norm."""
  __slots__ = ()


def _starlet_penalty(num_scales, coarse):
  return _Penalty(operator=lambda x: _penalised_planes(x, num_scales, coarse),
                  adjoint=lambda planes: _penalised_adjoint(planes, coarse),
                  project=_clip_box,
                  norm_sq=_STARLET_NORM_SQ, norm=tf.abs)


_TV_PENALTY = _Penalty(
    operator=_gradient, adjoint=_gradient_adjoint, project=_clip_disc,
    norm_sq=_GRADIENT_NORM_SQ,
    norm=lambda g: tf.sqrt(tf.reduce_sum(g**2, axis=-3, keepdims=True)))


def _penalty_value(penalty, weights, kappa):
  return tf.reduce_sum(weights * penalty.norm(penalty.operator(kappa)),
                       axis=[-3, -2, -1])


def _dual_prox(penalty, v, bound, dual, positivity, inner_iterations):
  """argmin_x ½‖x − v‖² + Σ bound ‖Dx‖ (+ x ≥ 0), by FGP on the dual.

  The minimiser is x(q) = P(v − Dᵀ q) for the dual maximiser q, ‖q(p)‖ <=
  bound(p) (P the projection on x >= 0, or the identity); the dual has a
  gradient D x(q) with Lipschitz constant ‖D‖².
  """
  dtype = v.dtype
  step = tf.constant(1.0 / penalty.norm_sq, dtype)

  def primal(q):
    x = v - penalty.adjoint(q)
    return tf.nn.relu(x) if positivity else x

  def body(i, q, r, s):
    q_new = penalty.project(r + step * penalty.operator(primal(r)), bound)
    s_new = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * s**2))
    r = q_new + ((s - 1.0) / s_new) * (q_new - q)
    return i + 1, q_new, r, s_new

  dual = penalty.project(dual, bound)
  _, dual, _, _ = tf.while_loop(
      lambda i, *_: i < inner_iterations, body,
      (tf.constant(0), dual, dual, tf.constant(1.0, dtype)))
  return primal(dual), dual


def _mfista(problem, penalty, weights, initial, dual, positivity,
            max_iterations, tol, inner_iterations):
  """Monotone FISTA on ½χ² + Σ weights ‖Dκ‖; see the module docstring."""
  dtype = initial.dtype
  step = 1.0 / problem.lipschitz
  bound = weights * step[..., tf.newaxis, :, :]

  def objective(kappa):
    return (_data_term(problem, kappa) +
            _penalty_value(penalty, weights, kappa))

  def norm(x):
    return tf.sqrt(tf.reduce_sum(x**2, axis=[-2, -1]))

  def cond(i, x, y, s, dual, value, history, changes, done):
    del x, y, s, dual, value, history, changes
    return (i < max_iterations) & ~done

  def body(i, x, y, s, dual, value, history, changes, done):
    z, dual = _dual_prox(penalty, y - step * _data_gradient(problem, y),
                         bound, dual, positivity, inner_iterations)
    z_value = objective(z)
    accept = z_value <= value
    x_new = tf.where(accept[..., tf.newaxis, tf.newaxis], z, x)
    value = tf.where(accept, z_value, value)
    s_new = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * s**2))
    change = norm(z - y) / tf.maximum(
        norm(z), tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype))
    y = x_new + (s / s_new) * (z - x_new) + ((s - 1.0) / s_new) * (x_new - x)
    done = tf.reduce_all(change <= tol)
    history = tf.tensor_scatter_nd_update(history, [[i]], value[tf.newaxis])
    changes = tf.tensor_scatter_nd_update(changes, [[i]], change[tf.newaxis])
    return i + 1, x_new, y, s_new, dual, value, history, changes, done

  initial_value = objective(initial)
  buffer = tf.fill(tf.concat([[max_iterations], tf.shape(initial_value)], 0),
                   tf.constant(np.nan, dtype))
  iterations, kappa, _, _, dual, _, history, changes, _ = tf.while_loop(
      cond, body,
      (tf.constant(0), initial, initial, tf.constant(1.0, dtype), dual,
       initial_value, buffer, buffer, tf.constant(False)))
  return kappa, dual, iterations, history, changes


@tf.function(autograph=False)
def _sparse_solve(problem, thresholds, initial, dual, num_scales, coarse,
                  positivity, max_iterations, tol, inner_iterations):
  penalty = _starlet_penalty(num_scales, coarse)
  weights = thresholds * problem.lipschitz[..., tf.newaxis, :, :]
  return _mfista(problem, penalty, weights, initial, dual, positivity,
                 max_iterations, tol, inner_iterations)


@tf.function(autograph=False)
def _tv_solve(problem, thresholds, initial, dual, positivity, max_iterations,
              tol, inner_iterations):
  weights = (thresholds * problem.lipschitz)[..., tf.newaxis, :, :]
  return _mfista(problem, _TV_PENALTY, weights, initial, dual, positivity,
                 max_iterations, tol, inner_iterations)


def _report(iterations, history, changes, tol):
  """`ProximalMapInfo` from the solver's fixed-size history buffers."""
  changes = changes[:iterations]
  return ProximalMapInfo(iterations=iterations, objective=history[:iterations],
                         relative_change=changes, converged=changes[-1] <= tol)


def _check_solver_args(max_iterations, tol, inner_iterations):
  return (_checks.positive_int(max_iterations, 'max_iterations'),
          _checks.positive_scalar(tol, 'tol'),
          _checks.positive_int(inner_iterations, 'inner_iterations'))


def _as_tensors(max_iterations, tol, inner_iterations, dtype):
  """Solver settings as tensors, so that new values do not retrace."""
  return (tf.constant(max_iterations, tf.int32), tf.constant(tol, dtype),
          tf.constant(inner_iterations, tf.int32))


def _initial_map(initial, problem, positivity):
  """The starting map, broadcast to the batch, projected on κ >= 0 if asked.

  MFISTA compares objective values, which assume a feasible start.
  """
  zeros = tf.zeros_like(problem.data[..., 0])
  if initial is None:
    return zeros
  initial = tf.cast(tf.convert_to_tensor(initial, name='initial'),
                    problem.data.dtype)
  _checks.same_map_shape(initial.shape, zeros.shape, 'initial', 'shear')
  _checks.finite(initial, 'initial')
  initial = initial + zeros
  return tf.nn.relu(initial) if positivity else initial


def sparse_map(shear, noise_std=None, mask=None, num_scales=5,
               threshold_sigma=3.0, positivity=False, max_iterations=500,
               tol=3e-4, inner_iterations=30, initial=None, name=None):
  """MAP convergence under an ℓ1 starlet (analysis) prior, GLIMPSE-like.

  Minimises ½ Σ N⁻¹ (Aκ − e)² + Σ_j Σ_p Λ_j(p) |W_j κ(p)| (module
  docstring), Λ_j = L τ_j with τ = `sparse_thresholds` (k σ_j soft
  thresholds that follow the propagated noise, per scale and pixel), by
  monotone FISTA. No debiasing step: the ℓ1 prior shrinks the amplitude of
  significant structures by about one threshold per scale.

  Args:
    shear: observed mean ellipticity ``[..., N, N, 2]`` (dimensionless);
      float32 or float64 (sets the dtype); ignored where mask = 0 (NaN
      allowed there). Or a `shear_map.ShearMap` (any object with attributes
      ``shear``, ``noise_std``, ``mask``), then leave ``noise_std`` and
      ``mask`` None; its arrays are cast to its shear's dtype.
    noise_std: shear noise std per pixel ``[..., N, N]`` or ``[..., N, N, 2]``
      (> 0 where mask = 1); a tensor or numpy array must have the dtype of
      ``shear``.
    mask: ``[..., N, N]`` (any real or bool dtype), the 0/1 indicator of
      observed pixels. Default: every pixel observed.
    num_scales: number J of starlet wavelet scales (2^J <= N); structures
      larger than about 2^J pixels live in the unpenalised coarse plane.
    threshold_sigma: k in the thresholds k σ_j, a number or one per scale
      (finest first), >= 0; 0 gives the least-squares (Kaiser-Squires-like)
      solution.
    positivity: if True, constrain κ >= 0 (then the map mean is set by the
      constraint, not by the data).
    max_iterations: maximum MFISTA iterations.
    tol: stop when every map's relative change ‖z_k − y_k‖/‖z_k‖ <= tol.
    inner_iterations: dual-projection iterations per proximal step.
    initial: optional starting map ``[..., N, N]`` (default zeros).
    name: optional name scope.

  Returns:
    (kappa, info): MAP maps ``[..., N, N]`` and a `ProximalMapInfo`.

  Raises:
    ValueError: for mismatched or non-square shapes, a noise_std whose float
      dtype differs from the shear's, a mask value other than 0 and 1, a
      non-finite shear or a noise std that is not finite and > 0 on an
      observed pixel, an empty mask (`shear_map.as_shear_map` gives these
      checks and messages), or bad solver settings. Value checks run eagerly.
  """
  with tf.name_scope(name or 'sparse_map'):
    _, problem = _set_up(shear, noise_std, mask)
    max_iterations, tol, inner_iterations = _check_solver_args(
        max_iterations, tol, inner_iterations)
    num_scales = _checks.positive_int(num_scales, 'num_scales')
    thresholds = _sparse_thresholds(problem.inverse_variance, problem.lipschitz,
                                    num_scales, threshold_sigma)
    initial = _initial_map(initial, problem, positivity)
    kappa, _, *report = _sparse_solve(
        problem, thresholds, initial, tf.zeros_like(thresholds), num_scales,
        False, bool(positivity),
        *_as_tensors(max_iterations, tol, inner_iterations, problem.data.dtype))
    return kappa, _report(*report, tol)


def tv_map(shear, noise_std=None, mask=None, regularisation=1.0,
           positivity=False, max_iterations=500, tol=3e-4, inner_iterations=30,
           initial=None, name=None):
  """MAP convergence under an isotropic total-variation prior.

  Minimises ½ Σ N⁻¹ (Aκ − e)² + Σ_p Λ(p) ‖∇κ(p)‖₂ by monotone FISTA, with
  the TV proximal step by Chambolle/Beck-Teboulle dual projection. The weight
  is set relative to the noise: the proximal step is a TV denoising of the
  gradient-step map with threshold Λ(p)/L = ``regularisation`` × the
  per-pixel std of that map's noise t Aᵀ N⁻¹ n (σ_pix for uniform noise
  without a mask).

  Args:
    shear, noise_std, mask: as in `sparse_map`.
    regularisation: dimensionless weight (>= 0) in units of the propagated
      pixel noise; 0 gives the least-squares solution.
    positivity, max_iterations, tol, inner_iterations, initial, name: as in
      `sparse_map`.

  Returns:
    (kappa, info): MAP maps ``[..., N, N]`` and a `ProximalMapInfo`.

  Raises:
    ValueError: as `sparse_map`, and for a negative or non-finite
      regularisation.
  """
  with tf.name_scope(name or 'tv_map'):
    _, problem = _set_up(shear, noise_std, mask)
    max_iterations, tol, inner_iterations = _check_solver_args(
        max_iterations, tol, inner_iterations)
    regularisation = float(regularisation)
    if not np.isfinite(regularisation) or regularisation < 0:
      raise ValueError(
          f'regularisation must be a finite number >= 0, got {regularisation!r}.')
    thresholds = _tv_thresholds(problem, regularisation)
    initial = _initial_map(initial, problem, positivity)
    dual = tf.zeros_like(_gradient(initial))
    kappa, _, *report = _tv_solve(
        problem, thresholds, initial, dual, bool(positivity),
        *_as_tensors(max_iterations, tol, inner_iterations, problem.data.dtype))
    return kappa, _report(*report, tol)


class MCALensInfo(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple(
        'MCALensInfo',
        ['iterations', 'objective', 'relative_change', 'converged',
         'gaussian_component', 'sparse_component'])):
  """Convergence report of `mcalens_map`.

  Attributes:
    iterations: int, alternations (Wiener step + sparse step) run.
    objective: ``[iterations, ...]`` ½χ² + ½ κ_Gᵀ S⁻¹ κ_G + ‖Λ W κ_S‖₁ after
      each alternation (dimensionless).
    relative_change: ``[iterations, ...]`` ‖κ_k − κ_{k−1}‖ / ‖κ_k‖ of the
      total map between alternations.
    converged: bool ``[...]``, the last relative change is <= tol.
    gaussian_component: κ_G ``[..., N, N]``, the Wiener-filtered part.
    sparse_component: κ_S ``[..., N, N]``, the sparse (peak) part.
  """
  __slots__ = ()


def mcalens_map(shear, noise_std=None, mask=None, prior=None, num_scales=5,
                threshold_sigma=3.0, max_iterations=20, tol=1e-3,
                sparse_iterations=20, inner_iterations=30, wiener_tol=1e-5,
                wiener_max_iterations=500, name=None):
  """Gaussian-plus-sparse MAP convergence, in the spirit of MCALens.

  Models κ = κ_G + κ_S with a Gaussian prior N(0, S) on κ_G (``prior``) and
  the ℓ1 starlet prior of `sparse_map` on κ_S, and minimises

    ½ Σ N⁻¹ (A(κ_G + κ_S) − e)² + ½ κ_Gᵀ S⁻¹ κ_G + Σ_j Σ_p Λ_j(p) |W_j κ_S(p)|

  by block-coordinate descent: κ_G ← `wiener.wiener_filter` of e − Aκ_S
  (the exact block minimiser, warm-started), then ``sparse_iterations``
  monotone-FISTA iterations on κ_S with data e − Aκ_G (warm-started). Both
  steps lower the objective, so its history is non-increasing up to the
  Wiener solver's tolerance. Starck et al. (2021) detect the sparse support
  once and use hard thresholds; this is the convex (soft, ℓ1) joint-MAP
  variant: κ_S holds only structure significant at k σ beyond what the
  Gaussian component explains, and is 0 (the map is then the Wiener filter)
  when there is none. The alternation is a Python loop: call it eagerly.

  Args:
    shear, noise_std, mask: as in `sparse_map` (a ShearMap-like ``shear``
      included; pass ``prior`` by keyword then).
    prior: a `priors.GaussianPrior` with event shape ``[N, N]`` and
      the dtype of ``shear`` (required), checked by `priors.check_prior`
      (with a ShearMap, its pixel scale must match the prior's when both are
      known).
    num_scales: starlet wavelet scales of the sparse component.
    threshold_sigma: k of the sparse component's thresholds k σ_j, a number
      or one per plane (J wavelet planes, then the coarse plane).
    max_iterations: maximum alternations.
    tol: stop when the relative change of κ between alternations is <= tol
      for every map.
    sparse_iterations: MFISTA iterations per sparse step.
    inner_iterations: dual-projection iterations per proximal step.
    wiener_tol, wiener_max_iterations: conjugate-gradient settings of each
      Wiener step.
    name: optional name scope.

  Returns:
    (kappa, info): κ_G + κ_S ``[..., N, N]`` and an `MCALensInfo` (which
    holds the two components).

  Raises:
    ValueError: as `sparse_map`, and if ``prior`` is missing, is not a
      ``GaussianPrior`` of the map size and dtype of ``shear``, or (with a
      ShearMap) was made for another pixel scale.
  """
  with tf.name_scope(name or 'mcalens_map'):
    wiener._check_prior(prior, noise_std, 'mcalens_map')  # pylint: disable=protected-access
    data, problem = _set_up(shear, noise_std, mask)
    dtype = problem.data.dtype
    priors.check_prior(prior, data, dtype=dtype,
                       allow_pixel_scale_mismatch=None)
    max_iterations, tol, inner_iterations = _check_solver_args(
        max_iterations, tol, inner_iterations)
    sparse_iterations = _checks.positive_int(sparse_iterations, 'sparse_iterations')
    num_scales = _checks.positive_int(num_scales, 'num_scales')
    thresholds = _sparse_thresholds(problem.inverse_variance, problem.lipschitz,
                                    num_scales, threshold_sigma, coarse=True)
    weights = thresholds * problem.lipschitz[..., tf.newaxis, :, :]
    penalty = _starlet_penalty(num_scales, coarse=True)
    zero_log_prob = prior.log_prob(tf.zeros(prior.event_shape, dtype))

    def residual_problem(component):
      return problem._replace(data=tf.where(
          problem.inverse_variance > 0,
          problem.data - lensing.shear_from_convergence(component),
          tf.zeros_like(problem.data)))

    def objective(gaussian_part, sparse_part):
      return (_data_term(problem, gaussian_part + sparse_part) +
              (zero_log_prob - prior.log_prob(gaussian_part)) +
              _penalty_value(penalty, weights, sparse_part))

    def norm(x):
      return tf.sqrt(tf.reduce_sum(x**2, axis=[-2, -1]))

    sparse_part = tf.zeros_like(problem.data[..., 0])
    gaussian_part = None
    dual = tf.zeros_like(thresholds)
    kappa = sparse_part
    history, changes = [], []
    for _ in range(max_iterations):
      gaussian_part, _ = wiener.wiener_filter(
          residual_problem(sparse_part).data, data.noise_std, data.mask, prior,
          tol=wiener_tol, max_iterations=wiener_max_iterations,
          initial=gaussian_part)
      sparse_part, dual, *_ = _sparse_solve(
          residual_problem(gaussian_part), thresholds, sparse_part, dual,
          num_scales, True, False,
          *_as_tensors(sparse_iterations, 0.0, inner_iterations, dtype))
      previous, kappa = kappa, gaussian_part + sparse_part
      history.append(objective(gaussian_part, sparse_part))
      changes.append(norm(kappa - previous) / tf.maximum(
          norm(kappa), tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype)))
      if bool(tf.reduce_all(changes[-1] <= tol)):
        break
    info = MCALensInfo(
        iterations=len(history), objective=tf.stack(history),
        relative_change=tf.stack(changes), converged=changes[-1] <= tol,
        gaussian_component=gaussian_part, sparse_component=sparse_part)
    return kappa, info

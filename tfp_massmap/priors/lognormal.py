r"""The shifted lognormal prior of a `LognormalField`, as a `Prior`.

`tfp_massmap.LognormalField` generates maps κ = λ (exp(g − σ_g²/2) − 1) from
a latent Gaussian field g with eigenvalues P_g (see ``tfp_massmap/lognormal.py``).
`LognormalPrior` is that field's prior: the pixel-wise map κ ↦ g, g = log(1 +
κ/λ) + σ_g²/2, is invertible on κ > −λ, so

    log p(κ) = log N⁺(g(κ); 0, C_g) − Σ_pixels log(κ + λ),

with N⁺ the (degenerate) Gaussian density of `GaussianPrior` on the latent
grid (modes with P_g = 0, such as k = 0, are directions without density, as
there), and the score is

    ∇ log p(κ) = (s_g(g) − 1) / (κ + λ),   s_g = −F⁻¹[P_g⁺ F g].

The σ-smoothed density ∫ p(κ) N(x; κ, σ²) dκ has no closed form, so the
score is exact at σ = 0 only (``smoothed_score`` False): the annealed
samplers refuse this prior, and `tfp_massmap.lognormal_posterior` samples
its exact posterior instead. For the Gaussian field (``shift`` None) it is
the `GaussianPrior` of the field's spectrum, exact at every σ.
"""

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import lognormal
from tfp_massmap.priors import gaussian

__all__ = ['LognormalPrior']


class LognormalPrior:
  """The prior of a `LognormalField`: density, score at σ = 0, samples.

  Implements the `tfp_massmap.priors.Prior` protocol on the field's N×N
  grid (``num_pixels_per_side`` N, ``size_divisor`` 1, the field's dtype and
  pixel scale); ``smoothed_score`` is False for a lognormal field and True
  for the Gaussian one (``field.shift`` None). Maps are dimensionless
  convergence ``[..., N, N]`` in the field's dtype.

  #### Examples

  ```python
  field = tfp_massmap.LognormalField(shift=0.035, map_size=64,
                                     pixel_scale_arcmin=0.8)
  prior = tfp_massmap.priors.LognormalPrior(field)
  kappa = prior.sample(4, seed=(1, 2))     # [4, 64, 64], kappa > -0.035
  prior.log_prob(kappa)                    # [4]
  prior.score(kappa, 0.)                   # gradient of log_prob
  ```
  """

  def __init__(self, field, name='LognormalPrior'):
    """Builds the prior of ``field``.

    Args:
      field: a `tfp_massmap.LognormalField`.
      name: name scope of the methods.

    Raises:
      ValueError: if ``field`` is not a `LognormalField`.
    """
    if not isinstance(field, lognormal.LognormalField):
      raise ValueError('field must be a tfp_massmap.LognormalField, got '
                       f'{type(field).__name__}.')
    self._field = field
    self._name = name
    grid = field.latent_power_grid if field.shift is not None else (
        field.power_grid)
    self._gaussian = gaussian.GaussianPrior(
        grid, pixel_scale_arcmin=field.pixel_scale_arcmin,
        name=name + 'Latent')

  @property
  def field(self):
    """The `LognormalField` whose prior this is."""
    return self._field

  @property
  def shift(self):
    """The shift λ (dimensionless), or None for the Gaussian field."""
    return self._field.shift

  @property
  def dtype(self):
    """The field's dtype (float32 or float64)."""
    return self._field.dtype

  @property
  def pixel_scale_arcmin(self):
    """The field's pixel side in arcmin."""
    return self._field.pixel_scale_arcmin

  @property
  def num_pixels_per_side(self):
    """N: the field's map size."""
    return self._field.map_size

  @property
  def size_divisor(self):
    """1: any N, the prior being defined on its own N×N grid."""
    return 1

  @property
  def smoothed_score(self):
    """False for a lognormal field (score at σ = 0 only), True if Gaussian."""
    return self._field.shift is None

  def _check_map(self, x):
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype, name='x')
    if x.dtype != self.dtype:
      raise ValueError(f'x has dtype {x.dtype.name} but this LognormalPrior '
                       f'has dtype {self.dtype.name}; cast x to '
                       f'{self.dtype.name}.')
    n = _checks.square_map_shape(x.shape, 'x')
    if n is not None and n != self.num_pixels_per_side:
      raise ValueError(f'x must have shape [..., {self.num_pixels_per_side}, '
                       f'{self.num_pixels_per_side}] (the field\'s map_size), '
                       f'got {x.shape}.')
    return x

  def _latent(self, kappa):
    """(g, κ + λ) of maps κ; NaN where κ <= −λ."""
    shift = tf.constant(self.shift, self.dtype)
    latent = tf.math.log1p(kappa / shift) + tf.constant(
        0.5 * self._field.latent_variance, self.dtype)
    return latent, kappa + shift

  def sample(self, sample_shape=(), seed=None, name=None):
    """Independent maps, as `LognormalField.sample` (same seed, same maps)."""
    return self._field.sample(sample_shape, seed=seed,
                              name=name or self._name + '_sample')

  def log_prob(self, kappa, name='log_prob'):
    """Log density of maps κ ``[..., N, N]`` (module docstring).

    With respect to Lebesgue measure on the support, as for `GaussianPrior`;
    −inf where some pixel has κ <= −λ (outside the support).

    Returns:
      Tensor ``[...]`` in the field's dtype.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      kappa = self._check_map(kappa)
      if self.shift is None:
        return self._gaussian.log_prob(kappa)
      inside = tf.reduce_all(kappa > -self.shift, axis=[-2, -1])
      safe = tf.where(kappa > -self.shift, kappa, tf.zeros_like(kappa))
      latent, offset = self._latent(safe)
      value = self._gaussian.log_prob(latent) - tf.reduce_sum(
          tf.math.log(offset), axis=[-2, -1])
      return tf.where(inside, value,
                      tf.constant(-np.inf, self.dtype) * tf.ones_like(value))

  def score(self, x, sigma=0., name='score'):
    """Score ∇ log p(x) of the prior, at σ = 0 for a lognormal field.

    Args:
      x: maps ``[..., N, N]`` with x > −λ (dimensionless convergence).
      sigma: the noise level; must be 0 for a lognormal field (its smoothed
        score has no closed form); any σ >= 0 for the Gaussian field, whose
        score is that of `GaussianPrior`.
      name: name scope.

    Returns:
      Tensor ``[..., N, N]`` in the field's dtype; NaN where x <= −λ.

    Raises:
      ValueError: for a concrete σ other than 0 with a lognormal field.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      x = self._check_map(x)
      if self.shift is None:
        return self._gaussian.score(x, sigma)
      if _checks._is_concrete(sigma) and np.any(np.asarray(sigma) != 0):  # pylint: disable=protected-access
        raise ValueError(
            f'sigma must be 0 for a lognormal prior, got {sigma!r}: the score '
            'of the sigma-smoothed lognormal density has no closed form '
            '(smoothed_score is False); use tfp_massmap.lognormal_posterior '
            'to sample its posterior.')
      latent, offset = self._latent(x)
      return (self._gaussian.score(latent, 0.) - 1.) / offset

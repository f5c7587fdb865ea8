"""Joint priors over a convergence map and cosmological parameters, p(κ, θ).

A joint prior extends the `Prior` protocol (``protocol.py``) with a small
vector θ of cosmological parameters (an amplitude, σ8, (Ωm, σ8), ...): its
score is the pair (∇κ log p_σ(κ, θ), ∇θ log p_σ(κ, θ)), it has a prior range
and a prior density over θ, and ``given(theta)`` is the conditional prior
p(κ | θ) as an ordinary `Prior`, so every estimator of the package runs the
conditional posterior p(κ | γ, θ) unchanged.

#### How σ-smoothing acts on θ

The annealed samplers need the score of a smoothed prior p_σ at every noise
level σ (docs/design.md §1). A joint prior here smooths κ only:

  p_σ(κ, θ) = p(θ) ∫ p(κ' | θ) N(κ − κ'; σ² I) dκ' = p(θ) p_σ(κ | θ),

so its κ score is the conditional prior's smoothed score at that θ, its θ
score is ∇θ log p(θ) + ∇θ log p_σ(κ | θ), and p_σ → p as σ → 0 for κ and θ
together. Why: θ is not a map pixel. It has its own units and a bounded
prior range, and noise of size σ (a κ-sized number, 1e-3 to 0.1) means
nothing on it; the annealing exists to connect the modes of the map prior,
and an analytic conditional prior (`AmplitudeGaussianPrior`) has a closed
form for the κ-smoothed density only. A learned joint network trained by
denoising score matching on both κ and θ (issue 15) would smooth θ as well,
with noise of its own scale per parameter; it implements the same protocol
(``score(x, theta, sigma)`` is then its estimate of both gradients of its
own p_σ), the samplers need no change, and its ``theta`` samples at the
last noise level carry that smoothing, which must then be small against the
θ posterior width.

#### Members

`JointPrior` lists the protocol; `joint_prior_properties` checks an object
against it (the `Prior` members through `prior_properties`, with the same
defaults), `check_theta` checks a concrete θ against the prior range, and
`denoise_given` is the κ denoiser at fixed θ (the prior's ``denoise`` or
Tweedie's formula on the κ score: θ is not smoothed, so
E[κ' | κ, θ] = κ + σ² ∇κ log p_σ(κ, θ)).
"""

import collections
import typing

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap.priors import gaussian
from tfp_massmap.priors import protocol

__all__ = [
    'AmplitudeGaussianPrior',
    'JointPrior',
    'JointPriorProperties',
    'check_theta',
    'denoise_given',
    'is_joint_prior',
    'joint_prior_properties',
]


class JointPrior(typing.Protocol):
  """The protocol of a prior over N×N convergence maps and parameters θ.

  θ is a vector ``[D]`` of named parameters with a bounded prior range. The
  members of `protocol.Prior` (``dtype``, ``pixel_scale_arcmin``,
  ``num_pixels_per_side``, ``size_divisor``, ``smoothed_score``) keep their
  meaning and defaults; ``score``, ``log_prob_theta``, ``given``,
  ``theta_names`` and ``theta_bounds`` are required. See the module
  docstring for how σ acts on θ.

  Attributes:
    theta_names: tuple of D distinct non-empty str, the parameter names
      (e.g. ``('sigma8',)``), in the order of θ's last axis.
    theta_bounds: ``[D, 2]`` finite floats, each parameter's prior range
      (lower < upper, in the parameter's own units); the prior density is 0
      outside.
  """

  def score(self, x, theta, sigma):
    """Scores of the smoothed joint prior, (∇κ, ∇θ) log p_σ(κ, θ).

    Args:
      x: maps ``[..., N, N]`` (dimensionless convergence).
      theta: parameters ``[..., D]`` inside ``theta_bounds``; the leading
        axes of ``x`` and ``theta`` index the same (κ, θ) pairs and
        broadcast.
      sigma: noise standard deviation (dimensionless, >= 0), a scalar or a
        tensor ``[...]`` broadcasting against the leading axes of ``x``.

    Returns:
      ``(score_x, score_theta)``: ``[..., N, N]`` (inverse convergence units)
      and ``[..., D]`` (inverse parameter units), with the broadcast leading
      axes.
    """

  def log_prob_theta(self, theta):
    """The parameter prior's log density log p(θ).

    Args:
      theta: ``[..., D]``.

    Returns:
      ``[...]``; -inf outside ``theta_bounds``.
    """

  def given(self, theta):
    """The conditional prior p(κ | θ) at one concrete θ ``[D]``, a `Prior`."""

  def score_kappa(self, x, theta, sigma):
    """Optional: the κ part of ``score`` alone, ``[..., N, N]``.

    Used where θ is held (the marginal route of
    `tfp_massmap.joint_posterior`); without it ``score(...)[0]``.
    """

  def field_log_likelihood(self, x, theta, sigma):
    """Optional: log p_σ(κ | θ) up to a term that does not depend on θ.

    Arguments as ``score``'s; returns ``[...]`` (nats). At σ = σ_n, the
    noise of fully observed white-noise shear data, and x their E-mode
    map, it is the field-level likelihood of θ, log p(γ | θ) + const
    (`tfp_massmap.theta_posterior`).
    """

  def denoise(self, x, theta, sigma):
    """Optional: the denoiser E[κ' | κ' + σu = x, θ], u ~ N(0, I).

    Arguments as ``score``'s; returns ``[..., N, N]``. Without it,
    `denoise_given` uses Tweedie's formula on the κ score.
    """


class JointPriorProperties(
    collections.namedtuple('JointPriorProperties',
                           ['theta_names', 'theta_bounds', 'prior'])):
  """The checked members of a `JointPrior`.

  Attributes:
    theta_names: tuple of D str.
    theta_bounds: float64 numpy ``[D, 2]``, lower < upper, finite.
    prior: the `protocol.PriorProperties` of its `Prior` members.
  """
  __slots__ = ()


def is_joint_prior(prior):
  """Whether ``prior`` claims the `JointPrior` protocol (has ``theta_names``).

  A cheap test to choose between the κ-only and the joint samplers;
  `joint_prior_properties` checks the members.
  """
  return getattr(prior, 'theta_names', None) is not None


def joint_prior_properties(joint_prior):
  """The members of a joint prior, checked.

  Args:
    joint_prior: an object implementing `JointPrior`.

  Returns:
    A `JointPriorProperties`.

  Raises:
    ValueError: if a required method is missing or not callable, if
      ``theta_names`` is not a tuple or list of distinct non-empty str, if
      ``theta_bounds`` is not ``[D, 2]`` finite with lower < upper, one row
      per name, or if a `Prior` member is malformed (`prior_properties`).
  """
  for method in ('score', 'log_prob_theta', 'given'):
    if not callable(getattr(joint_prior, method, None)):
      raise ValueError(
          f'a joint prior must have a {method} method (see '
          'tfp_massmap.priors.conditional.JointPrior, e.g. '
          f'AmplitudeGaussianPrior); got {joint_prior!r}.')
  names = getattr(joint_prior, 'theta_names', None)
  if (not isinstance(names, (tuple, list)) or not names or
      not all(isinstance(n, str) and n for n in names) or
      len(set(names)) != len(names)):
    raise ValueError('joint_prior.theta_names must be a non-empty tuple of '
                     f'distinct non-empty str, got {names!r}.')
  try:
    bounds = np.asarray(getattr(joint_prior, 'theta_bounds', None), np.float64)
  except (TypeError, ValueError):
    bounds = None
  if bounds is None or bounds.shape != (len(names), 2):
    raise ValueError(
        f'joint_prior.theta_bounds must be [D, 2] = [{len(names)}, 2] '
        '(lower, upper) for theta_names '
        f'{tuple(names)}, got {getattr(joint_prior, "theta_bounds", None)!r}.')
  if not np.all(np.isfinite(bounds)) or np.any(bounds[:, 0] >= bounds[:, 1]):
    raise ValueError('joint_prior.theta_bounds must be finite with lower < '
                     f'upper on every row, got {bounds.tolist()}.')
  return JointPriorProperties(theta_names=tuple(names), theta_bounds=bounds,
                              prior=protocol.prior_properties(joint_prior))


def check_theta(joint_prior, theta, name='theta'):
  """A concrete θ checked against a joint prior's names and range.

  Args:
    joint_prior: a `JointPrior`.
    theta: ``[D]`` parameters (or a Python float when D = 1).
    name: the argument's name in error messages.

  Returns:
    float64 numpy ``[D]``.

  Raises:
    ValueError: if ``theta`` is not D finite numbers inside
      ``theta_bounds`` (bounds included).
  """
  properties = joint_prior_properties(joint_prior)
  names, bounds = properties.theta_names, properties.theta_bounds
  try:
    value = np.asarray(theta, np.float64).reshape(-1)
  except (TypeError, ValueError):
    value = None
  if value is None or value.shape != (len(names),):
    raise ValueError(f'{name} must hold {len(names)} number(s), one per '
                     f'parameter {names}, got {theta!r}.')
  outside = ~np.isfinite(value) | (value < bounds[:, 0]) | (
      value > bounds[:, 1])
  if outside.any():
    i = int(np.flatnonzero(outside)[0])
    raise ValueError(
        f'{name}: {names[i]} = {float(value[i])!r} is outside the prior range '
        f'[{bounds[i, 0]:g}, {bounds[i, 1]:g}] (joint_prior.theta_bounds).')
  return value


def denoise_given(joint_prior, x, theta, sigma):
  """The κ denoiser at fixed θ, E[κ' | κ' + σu = x, θ].

  ``joint_prior.denoise(x, theta, sigma)`` when the prior has one, else
  Tweedie's formula ``x + σ² score_x`` with ``score_x`` the κ part of
  ``joint_prior.score(x, theta, sigma)``.

  Args:
    joint_prior: a `JointPrior`.
    x: noisy maps ``[..., N, N]``.
    theta: ``[..., D]`` parameters, as in ``JointPrior.score``.
    sigma: noise standard deviation (dimensionless, > 0), scalar or
      ``[...]``.

  Returns:
    Tensor ``[..., N, N]``.
  """
  if callable(getattr(joint_prior, 'denoise', None)):
    return joint_prior.denoise(x, theta, sigma)
  x = tf.convert_to_tensor(x)
  sigma = tf.convert_to_tensor(sigma, dtype=x.dtype)
  score_x, _ = joint_prior.score(x, theta, sigma)
  return x + tf.square(sigma)[..., tf.newaxis, tf.newaxis] * score_x


class AmplitudeGaussianPrior:
  """A Gaussian field whose power has an unknown amplitude, p(κ, θ).

  p(κ | θ) = N(0, A(θ) C) with C the covariance of a fiducial
  `GaussianPrior` (eigenvalues S in the orthonormal DFT basis), so
  p(κ | θ) is the `GaussianPrior` of spectrum A(θ) S. One parameter:

  * ``sigma8_fiducial=None``: θ = (A,), named ``'amplitude'``
    (dimensionless);
  * ``sigma8_fiducial=s``: θ = (σ8,), named ``'sigma8'``, with
    A = (σ8 / s)² (the convergence power scales as σ8² at fixed shape; the
    fiducial spectrum is the one of σ8 = s).

  The θ prior is uniform over ``bounds``, or log-uniform with
  ``log_uniform=True``. κ alone is smoothed (module docstring): p_σ(κ | θ)
  = N(0, A S + σ²), whose scores are closed form and Fourier diagonal:

    ∇κ log p_σ = −F⁻¹[(A S + σ²)⁺ F κ]   (`GaussianPrior.score` of A S),
    ∂A log p_σ = ½ Σ_k S_k (|κ̂_k|² / (A S_k + σ²)² − 1 / (A S_k + σ²)),

  the sums over the N² modes of the orthonormal DFT κ̂ (a mode with
  A S_k + σ² = 0, the map mean at σ = 0, is off the support and adds 0).
  The θ score is ∂A log p_σ · dA/dθ + d log p(θ)/dθ.

  #### Example

  ```python
  fiducial = GaussianPrior.from_power_spectrum(ell, cl, n=64,
                                               pixel_scale_arcmin=2.)
  prior = AmplitudeGaussianPrior(fiducial, (0.6, 1.0), sigma8_fiducial=0.8)
  score_kappa, score_sigma8 = prior.score(kappa, [[0.75]], sigma=0.01)
  prior.given([0.75])                     # a GaussianPrior, A = (0.75/0.8)²
  ```
  """

  def __init__(self, fiducial, bounds, *, sigma8_fiducial=None,
               log_uniform=False, name='AmplitudeGaussianPrior'):
    """Builds the prior.

    Args:
      fiducial: the `GaussianPrior` of A = 1 (batch shape ``[]``); its
        dtype, pixel scale and map size are this prior's.
      bounds: (lower, upper), the prior range of θ: of A (dimensionless), or
        of σ8 with ``sigma8_fiducial``; 0 < lower < upper, finite.
      sigma8_fiducial: None (θ is the amplitude A), or the σ8 of the
        fiducial spectrum (a positive float; θ is σ8).
      log_uniform: Python bool; the θ prior is uniform in log θ over
        ``bounds`` (True) or uniform in θ (False).
      name: name scope of the ops this prior creates.

    Raises:
      ValueError: if ``fiducial`` is not a `GaussianPrior` of batch shape
        ``[]``, ``bounds`` is not two finite numbers 0 < lower < upper,
        ``sigma8_fiducial`` is not a positive number or ``log_uniform`` not
        a bool.
    """
    if not isinstance(fiducial, gaussian.GaussianPrior):
      raise ValueError('fiducial must be a tfp_massmap.GaussianPrior (the '
                       f'prior of amplitude 1), got {type(fiducial).__name__}.')
    if fiducial.batch_shape.rank != 0:
      raise ValueError('fiducial must have batch shape [] (one spectrum), got '
                       f'{fiducial.batch_shape}.')
    try:
      lower, upper = (float(b) for b in bounds)
    except (TypeError, ValueError):
      raise ValueError('bounds must be (lower, upper), two numbers, got '
                       f'{bounds!r}.') from None
    if not (np.isfinite(lower) and np.isfinite(upper) and 0 < lower < upper):
      raise ValueError('bounds must be finite with 0 < lower < upper (the '
                       f'amplitude and σ8 are positive), got {bounds!r}.')
    if sigma8_fiducial is not None:
      sigma8_fiducial = _checks.positive_scalar(sigma8_fiducial,
                                                'sigma8_fiducial')
    if not isinstance(log_uniform, bool):
      raise ValueError(f'log_uniform must be a Python bool, got '
                       f'{log_uniform!r}.')
    self._fiducial = fiducial
    self._bounds = np.array([[lower, upper]])
    self._sigma8_fiducial = sigma8_fiducial
    self._log_uniform = log_uniform
    self._name = name

  @property
  def fiducial(self):
    """The `GaussianPrior` of amplitude 1."""
    return self._fiducial

  @property
  def theta_names(self):
    """``('amplitude',)``, or ``('sigma8',)`` with a fiducial σ8."""
    return ('amplitude',) if self._sigma8_fiducial is None else ('sigma8',)

  @property
  def theta_bounds(self):
    """``[[lower, upper]]``, the prior range of θ (float64 numpy)."""
    return self._bounds.copy()

  @property
  def sigma8_fiducial(self):
    """The σ8 of the fiducial spectrum (float), or None."""
    return self._sigma8_fiducial

  @property
  def log_uniform(self):
    """Whether the θ prior is uniform in log θ (else in θ)."""
    return self._log_uniform

  @property
  def dtype(self):
    return self._fiducial.dtype

  @property
  def pixel_scale_arcmin(self):
    return self._fiducial.pixel_scale_arcmin

  @property
  def num_pixels_per_side(self):
    return self._fiducial.num_pixels_per_side

  @property
  def size_divisor(self):
    return 1

  @property
  def smoothed_score(self):
    """True: the scores are exact at every σ >= 0."""
    return True

  def _power(self):
    """The power d log A / d log θ: 1 for the amplitude, 2 for σ8."""
    return 1. if self._sigma8_fiducial is None else 2.

  def amplitude(self, theta):
    """A(θ) ``[...]`` of parameters ``[..., 1]`` (dimensionless)."""
    theta = tf.convert_to_tensor(theta, self.dtype, name='theta')
    reference = 1. if self._sigma8_fiducial is None else self._sigma8_fiducial
    return (theta[..., 0] / reference)**self._power()

  def _conditional(self, amplitude):
    """The `GaussianPrior` of spectrum A S, batch shape of ``amplitude``."""
    return gaussian.GaussianPrior(
        amplitude[..., tf.newaxis, tf.newaxis] * self._fiducial.spectrum,
        pixel_scale_arcmin=self.pixel_scale_arcmin)

  def score(self, x, theta, sigma=0., name='score'):
    """(∇κ, ∇θ) log p_σ(κ, θ); see the class docstring.

    Args:
      x: maps ``[..., N, N]`` (dimensionless).
      theta: ``[..., 1]`` inside ``theta_bounds``, leading axes
        broadcasting against those of ``x``.
      sigma: noise standard deviation (dimensionless, >= 0), scalar or
        ``[...]``.
      name: name scope.

    Returns:
      ``(score_x [..., N, N], score_theta [..., 1])``.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      x = tf.convert_to_tensor(x, self.dtype, name='x')
      theta = tf.convert_to_tensor(theta, self.dtype, name='theta')
      sigma = tf.convert_to_tensor(sigma, self.dtype, name='sigma')
      amplitude = self.amplitude(theta)
      score_x = self._conditional(amplitude).score(x, sigma)
      spectrum = self._fiducial.spectrum
      variance = (amplitude[..., tf.newaxis, tf.newaxis] * spectrum +
                  tf.square(sigma)[..., tf.newaxis, tf.newaxis])
      # Σ_k S_k |κ̂_k|² / (A S_k + σ²)² = ⟨g, C g⟩ with g = score_x
      # (Parseval), and Σ_k S_k / (A S_k + σ²) over the support.
      quadratic = tf.reduce_sum(
          score_x * gaussian.fourier_filter(score_x, spectrum), axis=[-2, -1])
      trace = tf.reduce_sum(tf.math.divide_no_nan(spectrum, variance),
                            axis=[-2, -1])
      d_amplitude = 0.5 * (quadratic - trace)
      theta1 = theta[..., 0]
      d_theta = d_amplitude * self._power() * amplitude / theta1
      if self._log_uniform:
        d_theta = d_theta - 1. / theta1
      return score_x, d_theta[..., tf.newaxis]

  def denoise(self, x, theta, sigma, name='denoise'):
    """E[κ' | κ' + σu = x, θ]: `GaussianPrior.denoise` of spectrum A(θ) S.

    Args and returns as ``score``'s κ part.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      return self._conditional(self.amplitude(theta)).denoise(x, sigma)

  def log_prob_theta(self, theta, name='log_prob_theta'):
    """The θ prior's log density, ``[..., 1]`` -> ``[...]``; -inf outside."""
    with tf.name_scope(self._name), tf.name_scope(name):
      theta = tf.convert_to_tensor(theta, self.dtype, name='theta')[..., 0]
      lower, upper = self._bounds[0]
      if self._log_uniform:
        log_density = -tf.math.log(theta) - np.log(np.log(upper / lower))
      else:
        log_density = tf.fill(tf.shape(theta),
                              tf.constant(-np.log(upper - lower), self.dtype))
      inside = (theta >= lower) & (theta <= upper)
      return tf.where(inside, log_density,
                      tf.constant(-np.inf, self.dtype))

  def log_prob(self, x, theta, sigma=0., name='log_prob'):
    """The joint log density log p(θ) + log N(κ; 0, A(θ) S + σ²), ``[...]``.

    At σ = 0 the κ density is on the support of A S (the map mean
    excluded), as `GaussianPrior.log_prob`; ``score`` is its gradient.

    Args:
      x: maps ``[..., N, N]``.
      theta: ``[..., 1]``.
      sigma: noise standard deviation (dimensionless, >= 0), a Python float
        or a scalar tensor.
      name: name scope.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      return self.field_log_likelihood(x, theta, sigma) + (
          self.log_prob_theta(theta))

  def field_log_likelihood(self, x, theta, sigma, name='field_log_likelihood'):
    """The Gaussian log N(κ; 0, A(θ) S + σ²), ``[...]``, without log p(θ).

    Arguments as ``log_prob``'s; exact (the JointPrior protocol member).
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      x = tf.convert_to_tensor(x, self.dtype, name='x')
      spectrum = (self.amplitude(theta)[..., tf.newaxis, tf.newaxis] *
                  self._fiducial.spectrum + tf.square(
                      tf.convert_to_tensor(sigma, self.dtype)))
      return gaussian.GaussianPrior(spectrum).log_prob(x)

  def given(self, theta):
    """The conditional prior p(κ | θ), a `GaussianPrior` of spectrum A(θ) S.

    Args:
      theta: one concrete θ, ``[1]`` or a Python float, inside the bounds.

    Returns:
      A `GaussianPrior` with the fiducial's pixel scale.

    Raises:
      ValueError: if ``theta`` is not one finite number inside the bounds.
    """
    value = check_theta(self, theta)
    return self._conditional(self.amplitude(value))

  def __repr__(self):
    lower, upper = self._bounds[0]
    law = 'log-uniform' if self._log_uniform else 'uniform'
    return (f'AmplitudeGaussianPrior({self.theta_names[0]} {law} in '
            f'[{lower:g}, {upper:g}], N={self.num_pixels_per_side}, '
            f'dtype={self.dtype.name})')

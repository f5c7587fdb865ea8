"""A learned joint prior p(κ, θ) = p(θ) p(κ | θ) from a conditional network.

`LearnedJointPrior` pairs a `ScoreNetwork` conditioned on parameters θ (the
conditional prior p(κ | θ), trained by denoising score matching on (map, θ)
pairs: ``training.train_score_network`` with ``theta_names`` and
``theta_bounds``) with a uniform θ prior over the network's ``theta_bounds``.
Like every joint prior here it smooths κ only (``conditional.py``):
p_σ(κ, θ) = p(θ) p_σ(κ | θ).

#### What it provides

* ``given(theta)``: the conditional prior p(κ | θ) at one θ, an ordinary
  `Prior` (score and denoiser at every σ > 0), so every estimator of the
  package samples the conditional posterior p(κ | γ, θ).
* ``score_kappa(x, theta, sigma)`` and ``denoise(x, theta, sigma)``: the κ
  score ∇κ log p_σ(κ | θ) and the denoiser E[κ' | κ, θ], for batches of
  (κ, θ) pairs.
* ``log_prob_theta``: the uniform θ prior.
* ``score(x, theta, sigma)``: both parts of the joint score, with a ratio
  network (``LearnedJointPrior(network, ratio=...)``), so
  `tfp_massmap.joint_posterior.JointPosteriorSampler` samples
  p(κ, θ | γ) with it.

#### The θ score needs a second network

The conditional network learns ∇κ log p_σ(κ | θ), the gradient of the log
density up to a normalising constant log Z_σ(θ) that depends on θ, and ∇θ
needs that constant: integrating the κ score along a path in κ gives
log p_σ(κ | θ) − log p_σ(κ₀ | θ) with the θ-dependent log p_σ(κ₀ | θ)
unknown, and an energy parametrisation of the same network leaves the same
log Z_σ(θ) out. A `tfp_massmap.priors.ratio.RatioNetwork` trained by
classification on the same (map, θ) pairs (``training.train_ratio_network``)
learns ℓ = log p_σ(κ | θ) − log p_σ(κ), whose θ gradient is
∇θ log p_σ(κ | θ) with no normaliser left; so

  score(x, θ, σ) = (∇κ log p_σ(κ | θ) from the conditional network,
                    ∇θ ℓ(κ, θ, σ) + ∇θ log p(θ)),

the last term 0 inside ``theta_bounds`` (uniform θ prior). The two networks
are separate estimates: the κ part is not the κ gradient of ℓ + log p_σ(κ),
and nothing forces the pair to be the gradient of one density. Without a
ratio network ``score`` raises ``NotImplementedError``.
"""

import os

import numpy as np
import tensorflow as tf

from tfp_massmap import score_network as score_network_lib
from tfp_massmap.priors import conditional
from tfp_massmap.priors import ratio as ratio_lib

__all__ = [
    'ConditionedScoreNetwork',
    'LearnedJointPrior',
]


class _NetworkPriorMembers:
  """The `Prior` members of a prior made from a conditioned `ScoreNetwork`.

  Its dtype, pixel scale and size divisor are the network's; a
  convolutional network serves any map size; its κ score holds at every
  σ > 0.
  """

  @property
  def dtype(self):
    return self._network.dtype

  @property
  def pixel_scale_arcmin(self):
    return self._network.pixel_scale_arcmin

  @property
  def num_pixels_per_side(self):
    return None

  @property
  def size_divisor(self):
    return self._network.size_divisor

  @property
  def smoothed_score(self):
    return True


class LearnedJointPrior(_NetworkPriorMembers):
  """p(κ, θ) = U(θ; theta_bounds) p(κ | θ), p(κ | θ) a conditioned network.

  Implements the `conditional.JointPrior` members ``theta_names``,
  ``theta_bounds``, ``log_prob_theta``, ``given``, ``denoise`` and the
  `Prior` members; ``score`` needs a ``ratio`` network for its θ part
  (module docstring), and ``score_kappa`` is its κ part.

  #### Example

  ```python
  network = load_score_network('runs/joint/score_network.keras')
  prior = LearnedJointPrior(network)          # θ = (omega_m, sigma8)
  conditional_prior = prior.given([0.3, 0.8])  # a Prior of the map alone
  samples = sample_posterior(shear_map, conditional_prior, ...)
  joint = LearnedJointPrior(network, ratio='runs/ratio/ratio_network.keras')
  result = JointPosteriorSampler(joint, ...).sample(shear_map)  # κ and θ
  ```
  """

  def __init__(self, network, ratio=None, theta_map_size=None,
               name='LearnedJointPrior'):
    """Builds the prior.

    Args:
      network: a `ScoreNetwork` conditioned on θ (``theta_names`` set), or
        the path of its ``.keras`` file.
      ratio: None, or a `tfp_massmap.priors.ratio.RatioNetwork` (or the path
        of its ``.keras`` file) with the network's ``theta_names`` and
        ``theta_bounds``: the θ score of ``score``.
      theta_map_size: None, or the map side N (pixels) the ratio network
        was trained and calibrated on; `tfp_massmap.theta_posterior` warns
        when it draws θ from maps of another size (its logit, a sum over
        pixels, is not calibrated across sizes: docs/benchmarks.md).
      name: name scope of the ops this prior creates.

    Raises:
      ValueError: if ``network`` is not a conditioned `ScoreNetwork` (or the
        path of one; `load_score_network` names what the file is), or
        ``ratio`` is not a `RatioNetwork` (or the path of one) with the same
        parameter names, bounds and (when both record one) pixel scale.
    """
    if isinstance(network, (str, os.PathLike)):
      network = score_network_lib.load_score_network(network)
    if not isinstance(network, score_network_lib.ScoreNetwork):
      raise ValueError('network must be a tfp_massmap.ScoreNetwork '
                       'conditioned on θ, or the path of its .keras file; got '
                       f'{type(network).__name__}.')
    if not network.num_parameters:
      raise ValueError(
          'network is an unconditioned ScoreNetwork (theta_names is None): a '
          'LearnedJointPrior needs the conditional prior p(κ | θ), trained '
          'with theta_names and theta_bounds (training.train_score_network).')
    self._network = network
    self._bounds = np.asarray(network.theta_bounds, np.float64)
    self._ratio = None if ratio is None else _checked_ratio(ratio, network)
    self._theta_map_size = (None if theta_map_size is None else
                            int(theta_map_size))
    self._name = name

  @property
  def network(self):
    """The conditioned `ScoreNetwork`."""
    return self._network

  @property
  def ratio(self):
    """The `RatioNetwork` of the θ score, or None."""
    return self._ratio

  @property
  def theta_map_size(self):
    """The map side N the θ likelihood is calibrated on, or None."""
    return self._theta_map_size

  @property
  def theta_names(self):
    """The network's parameter names, e.g. ``('omega_m', 'sigma8')``."""
    return self._network.theta_names

  @property
  def theta_bounds(self):
    """``[D, 2]`` float64 numpy, the network's θ range and the θ prior's."""
    return self._bounds.copy()

  def log_prob_theta(self, theta, name='log_prob_theta'):
    """The uniform θ prior's log density, ``[..., D]`` → ``[...]``.

    −Σ_d log(upper_d − lower_d) inside ``theta_bounds`` (bounds included),
    −inf outside.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      theta = tf.convert_to_tensor(theta, self.dtype, name='theta')
      lower = tf.constant(self._bounds[:, 0], theta.dtype)
      upper = tf.constant(self._bounds[:, 1], theta.dtype)
      inside = tf.reduce_all((theta >= lower) & (theta <= upper), axis=-1)
      log_density = tf.constant(
          -np.sum(np.log(self._bounds[:, 1] - self._bounds[:, 0])), theta.dtype)
      return tf.where(inside, log_density,
                      tf.constant(-np.inf, theta.dtype))

  def score_kappa(self, x, theta, sigma, name='score_kappa'):
    """∇κ log p_σ(κ, θ) = ∇κ log p_σ(κ | θ), ``[..., N, N]``.

    Args:
      x: maps ``[..., N, N]`` (dimensionless), N divisible by
        ``size_divisor``.
      theta: ``[..., D]`` inside ``theta_bounds``, leading axes broadcasting
        against those of ``x``.
      sigma: noise standard deviation (dimensionless, > 0), scalar or
        ``[...]``.
      name: name scope.
    """
    with tf.name_scope(self._name), tf.name_scope(name):
      return self._network.score(x, sigma, theta)

  def denoise(self, x, theta, sigma, name='denoise'):
    """E[κ' | κ' + σu = x, θ], ``[..., N, N]``; arguments as ``score_kappa``."""
    with tf.name_scope(self._name), tf.name_scope(name):
      return self._network.denoise(x, sigma, theta)

  def score(self, x, theta, sigma, name='score'):
    """(∇κ, ∇θ) log p_σ(κ, θ), with the ratio network's θ score.

    Args:
      x: maps ``[..., N, N]`` (dimensionless), N divisible by
        ``size_divisor`` and by the ratio network's.
      theta: ``[..., D]`` inside ``theta_bounds``, leading axes broadcasting
        against those of ``x``.
      sigma: noise standard deviation (dimensionless, > 0), scalar or
        ``[...]``.
      name: name scope.

    Returns:
      ``(score_x [..., N, N], score_theta [..., D])``: the conditional
      network's κ score in the dtype of x, and ∇θ ℓ (+ ∇θ log p(θ) = 0
      inside the bounds) in the dtype of θ, with the broadcast leading axes.

    Raises:
      NotImplementedError: without a ratio network (module docstring).
    """
    self._require_ratio('θ score ∇θ log p_σ(κ | θ)')
    with tf.name_scope(self._name), tf.name_scope(name):
      # The uniform θ prior adds ∇θ log p(θ) = 0 inside the bounds.
      return (self._network.score(x, sigma, theta),
              self._ratio.theta_score(x, theta, sigma))

  def field_log_likelihood(self, x, theta, sigma,
                           name='field_log_likelihood'):
    """The ratio network's ℓ(κ, θ, σ) = log p_σ(κ | θ) − log p_σ(κ).

    log p_σ(κ | θ) up to the θ-independent log p_σ(κ) (the JointPrior
    protocol member; `tfp_massmap.theta_posterior`), ``[...]`` nats.
    Arguments as ``score``'s.

    Raises:
      NotImplementedError: without a ratio network.
    """
    self._require_ratio('field-level θ likelihood log p_σ(κ | θ)')
    with tf.name_scope(self._name), tf.name_scope(name):
      return self._ratio.log_ratio(x, theta, sigma)

  def _require_ratio(self, what):
    if self._ratio is None:
      raise NotImplementedError(
          f'LearnedJointPrior has no {what} without a ratio '
          'network: its network learns the κ score of p(κ | θ), which fixes '
          'log p_σ(κ | θ) only up to a θ-dependent constant. Pass '
          'ratio=<RatioNetwork or its .keras file> (trained by '
          'training.train_ratio_network, or examples/train_score.py '
          '--objective=ratio) to sample the joint posterior p(κ, θ | γ); use '
          'score_kappa for the κ score, or given(theta) for the conditional '
          'posterior p(κ | γ, θ) at a fixed θ.')

  def given(self, theta):
    """The conditional prior p(κ | θ) at one concrete θ, a `Prior`.

    Args:
      theta: ``[D]`` (or a Python float when D = 1), inside
        ``theta_bounds``.

    Returns:
      A `ConditionedScoreNetwork`.

    Raises:
      ValueError: if ``theta`` is not D finite numbers inside the bounds.
    """
    return ConditionedScoreNetwork(self._network,
                                   conditional.check_theta(self, theta))

  def __repr__(self):
    ranges = ', '.join(f'{n} in [{lo:g}, {hi:g}]' for n, (lo, hi) in zip(
        self.theta_names, self._bounds))
    with_ratio = ', with ratio network' if self._ratio is not None else ''
    return (f'LearnedJointPrior({ranges}, uniform{with_ratio}, '
            f'dtype={self.dtype})')


def _checked_ratio(ratio, network):
  """The ratio network (loaded from a path), checked against ``network``."""
  if isinstance(ratio, (str, os.PathLike)):
    ratio = ratio_lib.load_ratio_network(ratio)
  if not isinstance(ratio, ratio_lib.RatioNetwork):
    raise ValueError('ratio must be a tfp_massmap.priors.ratio.RatioNetwork '
                     'or the path of its .keras file, got '
                     f'{type(ratio).__name__}.')
  if (tuple(ratio.theta_names) != tuple(network.theta_names) or
      not np.allclose(ratio.theta_bounds, network.theta_bounds)):
    raise ValueError(
        f'the ratio network is over {tuple(ratio.theta_names)} in '
        f'{[list(b) for b in ratio.theta_bounds]}, the conditional network '
        f'over {tuple(network.theta_names)} in '
        f'{[list(b) for b in network.theta_bounds]}: they must name the same '
        'parameters, in the same order, with the same bounds.')
  scales = (ratio.pixel_scale_arcmin, network.pixel_scale_arcmin)
  if None not in scales and not np.isclose(*scales):
    raise ValueError(
        f'the ratio network was trained at {scales[0]:g} arcmin pixels, the '
        f'conditional network at {scales[1]:g} arcmin: they must describe '
        'the same maps.')
  return ratio


class ConditionedScoreNetwork(_NetworkPriorMembers):
  """A conditioned `ScoreNetwork` at a fixed θ: the `Prior` p(κ | θ).

  ``score(x, sigma)`` and ``denoise(x, sigma)`` are the network's at θ for
  every map; the other `Prior` members are the network's.

  Args:
    network: a `ScoreNetwork` with ``num_parameters`` D ≥ 1.
    theta: ``[D]`` parameters inside the network's ``theta_bounds`` (checked
      by the network when it runs).
  """

  def __init__(self, network, theta):
    self._network = network
    self._theta = np.asarray(theta, np.float64).reshape(
        [network.num_parameters])

  @property
  def network(self):
    return self._network

  @property
  def theta(self):
    """The fixed θ, float64 numpy ``[D]``."""
    return self._theta.copy()

  def score(self, x, sigma):
    """∇κ log p_σ(κ | θ), ``[..., N, N]`` in the dtype of x."""
    return self._network.score(x, sigma, self._theta_tensor())

  def denoise(self, x, sigma):
    """E[κ' | κ' + σu = x, θ], ``[..., N, N]`` in the dtype of x."""
    return self._network.denoise(x, sigma, self._theta_tensor())

  def _theta_tensor(self):
    return tf.constant(self._theta, self._network.compute_dtype)

  def __repr__(self):
    values = ', '.join(f'{n}={v:g}' for n, v in zip(self._network.theta_names,
                                                    self._theta))
    return f'ConditionedScoreNetwork({values})'

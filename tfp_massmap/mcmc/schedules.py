"""Noise-level schedules σ(step) for the annealed samplers.

An annealed sampler targets, at its step k, the posterior of the prior
convolved with N(0, σ_k²) (docs/design.md §1). A schedule says which σ_k: it is any
object with

* ``sigma(step)``: the noise level σ (dimensionless, like the convergence) of
  step ``step`` (a Python int or an integer tensor, possibly symbolic), as a
  float64 scalar tensor; non-increasing in ``step`` and constant after the
  last step;
* ``num_steps``: the Python int number of steps the schedule is meant to run.

`GeometricSchedule` lowers σ geometrically from ``sigma_max`` to
``sigma_min``; `ConstantSchedule` keeps σ fixed (plain HMC on one smoothed
target); `HeldSchedule` runs a schedule and then more steps at its last
level. All are plain Python objects usable inside ``tf.function`` and XLA.
"""

import abc

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks

__all__ = [
    'ConstantSchedule',
    'GeometricSchedule',
    'HeldSchedule',
    'NoiseSchedule',
]


class NoiseSchedule(abc.ABC):
  """Interface of a noise-level schedule (see the module docstring)."""

  @property
  @abc.abstractmethod
  def num_steps(self):
    """Number of steps (Python int) the schedule is meant to run."""

  @abc.abstractmethod
  def sigma(self, step):
    """Noise level of step ``step`` as a float64 scalar tensor."""

  @property
  def parameters(self):
    """`dict` of the constructor arguments."""
    return dict(self._parameters)

  def __repr__(self):
    args = ', '.join(f'{k}={v!r}' for k, v in self._parameters.items())
    return f'{type(self).__name__}({args})'


class GeometricSchedule(NoiseSchedule):
  """σ falls geometrically from ``sigma_max`` to ``sigma_min``.

  Noise level ``l`` (0 ≤ l < num_levels) is

    σ_l = σ_max (σ_min / σ_max)^(l / (num_levels − 1)),

  held for ``steps_per_level`` consecutive steps: step k uses level
  min(k // steps_per_level, num_levels − 1). The last level is exactly
  ``sigma_min`` (not a rounded power), and steps past `num_steps` stay there.

  #### Example

  ```python
  schedule = GeometricSchedule(sigma_max=0.1, sigma_min=1e-3, num_levels=100,
                               steps_per_level=2)
  schedule.num_steps        # 200
  schedule.sigma(0)         # 0.1
  schedule.sigma(199)       # 0.001
  ```
  """

  def __init__(self, sigma_max, sigma_min, num_levels, steps_per_level=1):
    """Builds the schedule.

    Args:
      sigma_max: largest (first) noise level, > 0, dimensionless.
      sigma_min: smallest (last) noise level, 0 < sigma_min <= sigma_max.
      num_levels: number of distinct noise levels, an int >= 2.
      steps_per_level: steps at each level, an int >= 1.

    Raises:
      ValueError: if a value is out of range.
    """
    self._parameters = dict(sigma_max=sigma_max, sigma_min=sigma_min,
                            num_levels=num_levels,
                            steps_per_level=steps_per_level)
    self._sigma_max = _checks.positive_scalar(sigma_max, 'sigma_max')
    self._sigma_min = _checks.positive_scalar(sigma_min, 'sigma_min')
    if self._sigma_min > self._sigma_max:
      raise ValueError(f'sigma_min must be <= sigma_max, got sigma_min='
                       f'{sigma_min!r} > sigma_max={sigma_max!r}.')
    self._num_levels = _checks.positive_int(num_levels, 'num_levels', minimum=2)
    self._steps_per_level = _checks.positive_int(steps_per_level, 'steps_per_level')

  @property
  def sigma_max(self):
    return self._sigma_max

  @property
  def sigma_min(self):
    return self._sigma_min

  @property
  def num_levels(self):
    return self._num_levels

  @property
  def steps_per_level(self):
    return self._steps_per_level

  @property
  def num_steps(self):
    return self._num_levels * self._steps_per_level

  def sigma(self, step):
    with tf.name_scope('GeometricSchedule_sigma'):
      step = tf.convert_to_tensor(step)
      last = self._num_levels - 1
      level = tf.minimum(step // self._steps_per_level,
                         tf.constant(last, step.dtype))
      fraction = tf.cast(level, tf.float64) / last
      log_ratio = np.log(self._sigma_min) - np.log(self._sigma_max)
      sigma = tf.constant(self._sigma_max, tf.float64) * tf.exp(
          fraction * tf.constant(log_ratio, tf.float64))
      return tf.where(tf.equal(level, last),
                      tf.constant(self._sigma_min, tf.float64), sigma)


class ConstantSchedule(NoiseSchedule):
  """A fixed noise level: HMC on one smoothed target p_σ."""

  def __init__(self, sigma, num_steps):
    """Builds the schedule.

    Args:
      sigma: the noise level, > 0, dimensionless.
      num_steps: number of steps, an int >= 1.

    Raises:
      ValueError: if a value is out of range.
    """
    self._parameters = dict(sigma=sigma, num_steps=num_steps)
    self._sigma = _checks.positive_scalar(sigma, 'sigma')
    self._num_steps = _checks.positive_int(num_steps, 'num_steps')

  @property
  def sigma_value(self):
    """The constant noise level (Python float)."""
    return self._sigma

  @property
  def num_steps(self):
    return self._num_steps

  def sigma(self, step):
    del step  # Same level at every step.
    return tf.constant(self._sigma, tf.float64)


class HeldSchedule(NoiseSchedule):
  """A schedule followed by ``extra_steps`` more steps at its last level.

  The joint sampler (`tfp_massmap.joint_posterior`) uses it to let the
  cosmological parameters settle at σ_min after the annealing.
  """

  def __init__(self, schedule, extra_steps):
    """Builds the schedule.

    Args:
      schedule: the schedule to run first (any object with ``sigma(step)``
        and ``num_steps``).
      extra_steps: steps at its last level after it, an int >= 0.

    Raises:
      ValueError: if ``extra_steps`` is not an int >= 0.
    """
    self._parameters = dict(schedule=schedule, extra_steps=extra_steps)
    self._schedule = schedule
    self._extra_steps = _checks.positive_int(extra_steps, 'extra_steps',
                                             minimum=0)

  @property
  def num_steps(self):
    return self._schedule.num_steps + self._extra_steps

  def sigma(self, step):
    step = tf.convert_to_tensor(step)
    return self._schedule.sigma(tf.minimum(
        step, tf.constant(self._schedule.num_steps - 1, step.dtype)))

"""A kernel that multiplies the inner kernel's step size by a random factor.

Where most directions of a target have the same posterior scale they share
one HMC frequency, and a fixed trajectory length near a multiple of π would
leave them (nearly) unmoved. Multiplying the step size by an independent
U(1 − j, 1 + j) factor per transition and chain breaks that resonance, and
is still a valid HMC kernel (a mixture of reversible kernels).
`JitteredStepSize` does it for a kernel whose results hold the step size
in ``step_size`` fields and nowhere else, like
`tfp.mcmc.HamiltonianMonteCarlo` with ``store_parameters_in_results=True``.
(`AnnealedHamiltonianMonteCarlo` also reports the step it took, so its
results would change shape; give it a per-chain ``step_size_factor``
instead.)
"""

import collections
import math

import tensorflow as tf

from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import unnest
from tensorflow_probability.python.mcmc import dual_averaging_step_size_adaptation as dual_averaging
from tensorflow_probability.python.mcmc import hmc as hmc_lib
from tensorflow_probability.python.mcmc import kernel as kernel_base
from tensorflow_probability.python.mcmc.internal import util as mcmc_util

__all__ = [
    'JitteredStepSize',
    'JitteredStepSizeResults',
    'adaptive_jittered_hmc',
    'log_accept_prob_getter_fn',
    'step_size_getter_fn',
    'step_size_setter_fn',
]

# The state is a batch of maps [..., N, N] (or a list of such batches): the
# jitter factor has the leading (chain) axes and broadcasts over the map.
_MAP_NDIMS = 2


class JitteredStepSizeResults(
    mcmc_util.PrettyNamedTupleMixin,
    collections.namedtuple('JitteredStepSizeResults',
                           ['inner_results', 'step_size'])):
  """Results of `JitteredStepSize`.

  Attributes:
    inner_results: the inner kernel's results; their ``step_size`` fields
      hold the un-jittered step size between transitions.
    step_size: the step size before jitter (a tensor or a list of tensors,
      as the inner kernel's), the one step-size adaptation reads and sets
      (see `step_size_getter_fn`, `step_size_setter_fn`).
  """
  __slots__ = ()


def _replace_every(results, **fields):
  """Replaces the named fields in ``results`` and every nested namedtuple.

  `unnest.replace_innermost` replaces one occurrence; HMC's results hold the
  step size twice (accepted and proposed results), and both must keep the
  shape of the un-jittered step for `tf.while_loop`.
  """
  if not mcmc_util.is_namedtuple_like(results):
    return results
  updates = {name: _replace_every(getattr(results, name), **fields)
             for name in results._fields}
  updates.update({name: value for name, value in fields.items()
                  if name in results._fields})
  return results._replace(**updates)


def step_size_setter_fn(kernel_results, new_step_size):
  """Sets the un-jittered step size of `JitteredStepSizeResults`."""
  return kernel_results._replace(step_size=new_step_size)


def step_size_getter_fn(kernel_results):
  """The un-jittered step size of `JitteredStepSizeResults`."""
  return kernel_results.step_size


def log_accept_prob_getter_fn(kernel_results):
  """min(0, log acceptance ratio) of the inner kernel's last transition."""
  log_accept_ratio = unnest.get_innermost(kernel_results.inner_results,
                                          'log_accept_ratio')
  return tf.minimum(tf.zeros([], log_accept_ratio.dtype), log_accept_ratio)


class JitteredStepSize(kernel_base.TransitionKernel):
  """Runs a kernel with its step size times U(1 − j, 1 + j) per transition.

  The factor is drawn independently per chain: its shape is the leading
  (chain) axes of the state ``[..., N, N]`` (of its first part, for a list
  of parts) followed by two axes of size 1, so it broadcasts over each map;
  the inner step size must broadcast against it. The results keep the
  un-jittered step size, in their own ``step_size`` and in every
  ``step_size`` field of the inner results, so their shapes stay fixed from
  transition to transition.

  To adapt the step size, wrap this kernel in
  `tfp.mcmc.DualAveragingStepSizeAdaptation` (or
  `tfp.mcmc.SimpleStepSizeAdaptation`) with this module's
  `step_size_setter_fn`, `step_size_getter_fn` and
  `log_accept_prob_getter_fn`: TFP's default getters would find the inner
  results' copy, which this kernel overwrites.

  #### Example

  ```python
  kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
      JitteredStepSize(
          tfp.mcmc.HamiltonianMonteCarlo(
              target_log_prob_fn, step_size=0.1, num_leapfrog_steps=8,
              store_parameters_in_results=True),
          jitter=0.2),
      num_adaptation_steps=500,
      step_size_setter_fn=jittered_step_size.step_size_setter_fn,
      step_size_getter_fn=jittered_step_size.step_size_getter_fn,
      log_accept_prob_getter_fn=jittered_step_size.log_accept_prob_getter_fn)
  ```
  """

  def __init__(self, inner_kernel, jitter, name=None):
    """Initializes this kernel.

    Args:
      inner_kernel: a `TransitionKernel` whose results hold ``step_size``
        (the innermost one is the step the kernel uses).
      jitter: float in [0, 1): the step size is multiplied by a factor
        uniform in [1 − jitter, 1 + jitter] (dimensionless).
      name: Python `str` name prefixed to the ops this kernel creates.
        Default: 'jittered_step_size'.

    Raises:
      ValueError: if ``jitter`` is outside [0, 1).
    """
    try:
      value = float(jitter)
    except (TypeError, ValueError):
      value = math.nan
    if isinstance(jitter, bool) or not 0. <= value < 1.:
      raise ValueError(f'jitter must be a float in [0, 1), got {jitter!r}.')
    self._parameters = dict(inner_kernel=inner_kernel, jitter=value,
                            name=name or 'jittered_step_size')

  @property
  def inner_kernel(self):
    return self._parameters['inner_kernel']

  @property
  def jitter(self):
    return self._parameters['jitter']

  @property
  def name(self):
    return self._parameters['name']

  @property
  def parameters(self):
    return self._parameters

  @property
  def is_calibrated(self):
    return self.inner_kernel.is_calibrated

  def one_step(self, current_state, previous_kernel_results, seed=None):
    """Runs the inner kernel once with a jittered step size.

    Args:
      current_state: tensor ``[..., N, N]`` or list of such tensors.
      previous_kernel_results: `JitteredStepSizeResults`.
      seed: PRNG seed; see `tfp.random.sanitize_seed` for details.

    Returns:
      next_state: the inner kernel's next state.
      kernel_results: `JitteredStepSizeResults`.
    """
    with tf.name_scope(mcmc_util.make_name(self.name, 'jittered_step_size',
                                           'one_step')):
      jitter_seed, inner_seed = samplers.split_seed(seed, n=2)
      step_size = previous_kernel_results.step_size
      first_part = tf.nest.flatten(current_state)[0]
      dtype = tf.nest.flatten(step_size)[0].dtype
      shape = ps.concat([ps.shape(first_part)[:-_MAP_NDIMS],
                         [1] * _MAP_NDIMS], axis=0)
      jitter = tf.constant(self.jitter, dtype)
      factor = samplers.uniform(shape, minval=1. - jitter, maxval=1. + jitter,
                                dtype=dtype, seed=jitter_seed)
      inner_results = unnest.replace_innermost(
          previous_kernel_results.inner_results,
          step_size=tf.nest.map_structure(lambda s: s * factor, step_size))
      new_state, inner_results = self.inner_kernel.one_step(
          current_state, inner_results, seed=inner_seed)
      # Store the un-jittered step, keeping the results' shapes fixed.
      inner_results = _replace_every(inner_results, step_size=step_size)
      return new_state, JitteredStepSizeResults(inner_results, step_size)

  def bootstrap_results(self, init_state):
    """The inner kernel's initial results and its (un-jittered) step size."""
    with tf.name_scope(mcmc_util.make_name(self.name, 'jittered_step_size',
                                           'bootstrap_results')):
      inner_results = self.inner_kernel.bootstrap_results(init_state)
      step_size = tf.nest.map_structure(
          tf.convert_to_tensor,
          unnest.get_innermost(inner_results, 'step_size'))
      return JitteredStepSizeResults(inner_results, step_size)


def adaptive_jittered_hmc(target_log_prob_fn, initial_step_size, *,
                          num_leapfrog_steps, jitter, num_adaptation_steps,
                          target_accept_prob):
  """Jittered HMC and its dual-averaging warm-up, as the exact samplers use.

  Args:
    target_log_prob_fn: the target, as `tfp.mcmc.HamiltonianMonteCarlo`'s.
    initial_step_size: a tensor or a list of tensors (one per state part),
      where the adaptation starts.
    num_leapfrog_steps: leapfrog steps per transition (int).
    jitter: j in [0, 1) of `JitteredStepSize`.
    num_adaptation_steps: transitions of the warm-up (int).
    target_accept_prob: the mean acceptance the adaptation aims at (a
      tensor in the state's dtype).

  Returns:
    ``(make_kernel, adaptive_kernel)``: ``make_kernel(step_size)`` is
    `tfp.mcmc.HamiltonianMonteCarlo` wrapped in `JitteredStepSize`, and
    ``adaptive_kernel`` is `tfp.mcmc.DualAveragingStepSizeAdaptation` of
    ``make_kernel(initial_step_size)`` with this module's getters and
    setter.
  """
  def make_kernel(step_size):
    return JitteredStepSize(
        hmc_lib.HamiltonianMonteCarlo(
            target_log_prob_fn, step_size=step_size,
            num_leapfrog_steps=num_leapfrog_steps,
            store_parameters_in_results=True),
        jitter=jitter)

  adaptive_kernel = dual_averaging.DualAveragingStepSizeAdaptation(
      make_kernel(initial_step_size),
      num_adaptation_steps=num_adaptation_steps,
      target_accept_prob=target_accept_prob,
      step_size_setter_fn=step_size_setter_fn,
      step_size_getter_fn=step_size_getter_fn,
      log_accept_prob_getter_fn=log_accept_prob_getter_fn)
  return make_kernel, adaptive_kernel

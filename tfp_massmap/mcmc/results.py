"""The one result type of the package's posterior samplers, and its interval.

`sample_posterior` (annealed HMC under a score prior), `lognormal_posterior`
(exact HMC under the lognormal prior) and any other sampler of convergence
maps return a `PosteriorSamples`: the samples, their per-pixel mean, standard
deviation and central 68 % and 95 % credible intervals (always from
`credible_interval`), a `dict` of diagnostics, and optionally a `ChainTrace`
of the chains' states with a chain axis, the layout TFP's diagnostics
expect. `from_samples` builds one from samples. Convergence is
dimensionless.
"""

import collections
import math
import warnings

import numpy as np
import tensorflow as tf

__all__ = [
    'ChainTrace',
    'PER_CHAIN_DIAGNOSTICS',
    'PosteriorSamples',
    'acceptance_summary',
    'credible_interval',
    'from_samples',
]

# Diagnostics with one entry per chain, in the order of the chains; what
# `PosteriorSamples.drop_diverged` keeps of the surviving chains.
PER_CHAIN_DIAGNOSTICS = ('max_abs_kappa', 'would_be_acceptance',
                         'acceptance_per_chain', 'final_step_size_factor')


class ChainTrace(
    collections.namedtuple('ChainTrace',
                           ['states', 'sigma', 'accept_probability'])):
  """The states a sampler kept along its chains, chain axis second.

  Attributes:
    states: ``[T, C, ..., N, N]`` convergence maps (dimensionless) at T kept
      transitions of C chains; ``[...]`` is the batch shape of the data
      (empty for one map). This is the layout of
      `tfp.mcmc.potential_scale_reduction` (``independent_chain_ndims=1``,
      the default) and of `tfp.mcmc.effective_sample_size` with
      ``cross_chain_dims=1``.
    sigma: ``[T]`` the noise level each kept state targets (the annealed
      posterior p_σ; 0 for a sampler of the exact posterior).
    accept_probability: ``[T, C, ...]`` the Metropolis acceptance
      probability min(1, exp(−ΔH)) of each kept transition (for the
      annealed sampler without correction: the one a test would have used,
      see `AnnealedHamiltonianMonteCarlo`).
  """
  __slots__ = ()


class PosteriorSamples(
    collections.namedtuple('PosteriorSamples', [
        'samples', 'mean', 'std', 'interval_68', 'interval_95',
        'diagnostics', 'trace', 'parameters'], defaults=(None,))):
  """Posterior samples of convergence maps and their per-pixel summaries.

  ``[...]`` below is the batch shape of the data (empty for one map).

  Attributes:
    samples: ``[S, ..., N, N]`` samples (dimensionless convergence): the
      independent final states of the annealed chains, or the kept states of
      MCMC chains (correlated: see the sampler's effective sample sizes).
    mean: ``[..., N, N]`` posterior mean: the sample mean, or a sampler's
      estimate over more transitions than it keeps (its docstring says).
    std: ``[..., N, N]`` posterior standard deviation, likewise (sample std
      with 1/S normalisation); None when S = 1.
    interval_68: ``[2, ..., N, N]`` lower and upper bounds of the central
      68 % per-pixel credible interval of ``samples`` (`credible_interval`);
      None when S = 1.
    interval_95: ``[2, ..., N, N]``, the same for 95 %; it needs at least 39
      samples (`credible_interval`); None when S = 1.
    diagnostics: `dict` of the sampler's diagnostics and settings (its
      docstring lists them); per-chain entries (`PER_CHAIN_DIAGNOSTICS`)
      have one value per chain.
    trace: a `ChainTrace` when the sampler was asked to keep one, else None.
    parameters: for a sampler of a joint posterior p(κ, θ | γ)
      (`tfp_massmap.joint_posterior`), a `dict` from each parameter's name
      to its samples ``[S, ...]``, the same chains as ``samples``; None
      (the default) for a sampler of κ alone.
  """
  __slots__ = ()

  def drop_diverged(self):
    """The same samples without the diverged chains.

    The chains listed in ``diagnostics['diverged_chains']`` (indices into
    ``samples``, one sample per chain) are removed.

    Returns:
      ``self`` when no chain diverged; else a new `PosteriorSamples` of the
      other chains, with ``mean``, ``std`` and intervals recomputed, the
      per-chain diagnostics (`PER_CHAIN_DIAGNOSTICS`), the trace and the
      parameter samples restricted to them, the mean and minimum of
      ``would_be_acceptance`` recomputed, ``num_diverged_chains`` 0, and
      ``num_dropped_chains`` and ``dropped_chains`` (indices in the
      original run) set.

    Raises:
      ValueError: if fewer than 2 chains would remain.
    """
    diverged = list(self.diagnostics.get('diverged_chains', []))
    if not diverged:
      return self
    num = int(self.samples.shape[0])
    keep = sorted(set(range(num)) - set(diverged))
    if len(keep) < 2:
      raise ValueError(
          f'{len(diverged)} of {num} chains diverged; fewer than 2 would '
          'remain, too few for posterior summaries. Rerun with a smaller '
          'step_size_factor or more chains.')
    diagnostics = dict(self.diagnostics)
    for key in PER_CHAIN_DIAGNOSTICS:
      if diagnostics.get(key) is not None:
        diagnostics[key] = [diagnostics[key][i] for i in keep]
    diagnostics.update(
        acceptance_summary(diagnostics.get('would_be_acceptance')))
    diagnostics.update(num_diverged_chains=0, diverged_chains=[],
                       num_dropped_chains=len(diverged),
                       dropped_chains=diverged)
    trace = self.trace
    if trace is not None:
      trace = trace._replace(
          states=tf.gather(trace.states, keep, axis=1),
          accept_probability=tf.gather(trace.accept_probability, keep,
                                       axis=1))
    parameters = self.parameters
    if parameters is not None:
      parameters = {name: tf.gather(value, keep)
                    for name, value in parameters.items()}
    return from_samples(tf.gather(self.samples, keep), diagnostics,
                        trace=trace, parameters=parameters)


def acceptance_summary(would_be_acceptance):
  """Mean and minimum over chains of the per-chain would-be acceptance."""
  if would_be_acceptance is None:
    return dict(mean_would_be_acceptance=None, min_would_be_acceptance=None)
  return dict(mean_would_be_acceptance=float(np.mean(would_be_acceptance)),
              min_would_be_acceptance=float(np.min(would_be_acceptance)))


def from_samples(samples, diagnostics, *, mean=None, std=None, trace=None,
                 parameters=None):
  """A `PosteriorSamples` with per-pixel summaries of ``samples``.

  Args:
    samples: ``[S, ..., N, N]`` float tensor or array.
    diagnostics: the `dict` to store.
    mean: optional ``[..., N, N]`` mean estimated otherwise (e.g. over every
      transition of a chain); default the sample mean.
    std: optional ``[..., N, N]`` standard deviation likewise; default the
      sample standard deviation (1/S), None when S = 1.
    trace: optional `ChainTrace`.
    parameters: optional `dict` from parameter names to their samples
      ``[S, ...]`` (one per sample of ``samples``), stored as given.

  Returns:
    A `PosteriorSamples` whose intervals are `credible_interval` of
    ``samples`` (None when S = 1).

  Raises:
    ValueError: if a parameter's samples do not have S entries along axis 0.
  """
  samples = tf.convert_to_tensor(samples)
  several = samples.shape[0] >= 2
  for name, value in (parameters or {}).items():
    shape = tf.TensorShape(np.shape(value))
    if shape.rank is None or shape.rank < 1 or shape[0] != samples.shape[0]:
      raise ValueError(
          f'parameters[{name!r}] must hold one sample per sample of '
          f'samples ({samples.shape[0]}) along axis 0, got shape {shape}.')
  if mean is None:
    mean = tf.reduce_mean(samples, axis=0)
  if std is None and several:
    std = tf.math.reduce_std(samples, axis=0)
  return PosteriorSamples(
      samples=samples,
      mean=mean,
      std=std,
      interval_68=credible_interval(samples, 0.68) if several else None,
      interval_95=credible_interval(samples, 0.95) if several else None,
      diagnostics=diagnostics,
      trace=trace,
      parameters=parameters)


def credible_interval(samples, level):
  """Central per-pixel credible interval from S samples.

  The bounds are the (1 ± level)/2 quantiles of the samples at the plotting
  positions q·(S + 1) of the sorted samples (linear interpolation between
  order statistics). With these positions a further draw from the same
  distribution falls inside the interval with probability ``level`` on
  average, for any S: the usual positions q·(S − 1) give intervals that are
  too narrow for small S (with 16 samples the "68 %" and "95 %" intervals
  cover about 60 % and 84 %). Positions outside [1, S] are clipped to the
  extreme samples, so a 95 % interval needs S ≥ 39; with fewer samples it
  is [min, max], which covers (S − 1)/(S + 1), and a warning says so.

  Args:
    samples: ``[S, ...]`` float tensor, S ≥ 2 samples along axis 0.
    level: credible level in (0, 1), e.g. 0.68.

  Returns:
    ``[2, ...]`` lower and upper bounds, same dtype as the samples.
  """
  samples = tf.convert_to_tensor(samples)
  num = int(samples.shape[0])
  if num < 2:
    raise ValueError(f'need at least 2 samples for a credible interval, got {num}.')
  if not 0. < level < 1.:
    raise ValueError(f'level must be in (0, 1), got {level!r}.')
  tail = 0.5 * (1. - level)
  if tail * (num + 1) < 1.:
    warnings.warn(f'{num} samples cannot resolve a {level:.0%} interval (needs '
                  f'{math.ceil(1. / tail) - 1}); using [min, max], which '
                  f'covers {(num - 1) / (num + 1):.0%} on average.')
  ordered = tf.sort(samples, axis=0)
  bounds = []
  for q in (tail, 1. - tail):
    position = min(max(q * (num + 1), 1.), float(num)) - 1.  # 0-based.
    below = int(math.floor(position))
    above = min(below + 1, num - 1)
    weight = tf.cast(position - below, samples.dtype)
    bounds.append(ordered[below] + weight * (ordered[above] - ordered[below]))
  return tf.stack(bounds)

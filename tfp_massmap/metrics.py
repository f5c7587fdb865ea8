"""Map-quality metrics of the benchmark protocol (docs/design.md §6).

All metrics are computed over the pixels where ``mask`` is 1 (the whole map
when mask is None), after removing each map's mean over those pixels, since
shear constrains κ only up to a constant (mass-sheet degeneracy). Inputs are
numpy-convertible arrays ``[..., N, N]``; leading axes are kept.
"""

import numpy as np

__all__ = ['rmse', 'pearson_r', 'coverage']


def _prepare(truth, estimate, mask):
  truth = np.asarray(truth, dtype=np.float64)
  estimate = np.asarray(estimate, dtype=np.float64)
  if truth.shape[-2:] != estimate.shape[-2:]:
    raise ValueError(f'truth has map shape {truth.shape[-2:]} but estimate has '
                     f'{estimate.shape[-2:]}; they must match.')
  if mask is None:
    mask = np.ones(truth.shape[-2:])
  mask = np.asarray(mask, dtype=np.float64)
  if mask.shape[-2:] != truth.shape[-2:]:
    raise ValueError(f'mask has map shape {mask.shape[-2:]} but the maps have '
                     f'{truth.shape[-2:]}; they must match.')
  count = mask.sum(axis=(-2, -1))
  if np.any(count == 0):
    raise ValueError('mask selects no pixel; expected at least one pixel with mask = 1.')

  def centred(x):
    mean = (x * mask).sum(axis=(-2, -1), keepdims=True) / count[..., None, None]
    return (x - mean) * mask

  return centred(truth), centred(estimate), mask, count


def rmse(truth, estimate, mask=None):
  """Root-mean-square error over the mask, means removed (dimensionless)."""
  t, e, _, count = _prepare(truth, estimate, mask)
  return np.sqrt(((t - e)**2).sum(axis=(-2, -1)) / count)


def pearson_r(truth, estimate, mask=None):
  """Pearson correlation coefficient over the mask."""
  t, e, _, _ = _prepare(truth, estimate, mask)
  num = (t * e).sum(axis=(-2, -1))
  den = np.sqrt((t * t).sum(axis=(-2, -1)) * (e * e).sum(axis=(-2, -1)))
  return num / den


def coverage(truth, lower, upper, mask=None):
  """Fraction of masked pixels whose true κ lies in [lower, upper].

  The intervals are per-pixel credible intervals of the posterior; all maps
  are compared as given (no mean removal: the sampler's maps and the truth
  share the convention that the k = 0 mode is zero). Returns a float.
  """
  truth = np.asarray(truth, dtype=np.float64)
  lower = np.asarray(lower, dtype=np.float64)
  upper = np.asarray(upper, dtype=np.float64)
  if not truth.shape == lower.shape == upper.shape:
    raise ValueError(f'truth, lower and upper must have the same shape, got '
                     f'{truth.shape}, {lower.shape}, {upper.shape}.')
  inside = np.ones(truth.shape, bool) if mask is None else np.broadcast_to(
      np.asarray(mask) > 0, truth.shape)
  if not inside.any():
    raise ValueError('mask selects no pixel; expected at least one pixel with mask = 1.')
  hit = (truth >= lower) & (truth <= upper)
  return float(hit[inside].mean())

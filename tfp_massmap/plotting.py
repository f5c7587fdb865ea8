"""Figures: convergence maps on a common scale, and parameter posteriors.

`plot_maps` draws a row (or grid) of map panels; `plot_parameters` the
corner plot of posterior samples of cosmological parameters. Both write
their PNG atomically. matplotlib is imported lazily with the
non-interactive Agg backend, so the rest of the package never needs a
display.
"""

import contextlib
import math
import os
import textwrap
import uuid

import numpy as np

__all__ = ['plot_maps', 'plot_parameters']


def plot_maps(panels, path, pixel_scale_arcmin, mask=None, clusters=None,
              ncols=None, title=None, shared_scale=True, metadata=None,
              peaks=None):
  """Writes a PNG with one panel per map.

  Args:
    panels: ordered mapping {title: 2-D array [N, N]} (row = Dec, column =
      RA). All maps share one colour scale (the 1st-99.5th percentile of the
      first map inside the mask) unless ``shared_scale`` is False; a panel
      whose title contains 'std' always gets its own scale.
    path: output PNG path; written atomically (a temporary file in the same
      folder, then a rename), with the permissions of any new file (those
      of ``open()`` under the process umask, 0644 with umask 022).
    pixel_scale_arcmin: pixel side in arcmin; axes are labelled in arcmin.
    mask: optional [N, N] array, 1 = data; masked-out pixels are greyed.
    clusters: optional sequence of (x_pix, y_pix, label) to overlay as
      crosses with labels (e.g. X-ray clusters with their redshift).
    ncols: panels per row (default: all in one row up to 4, then 4).
    title: optional figure title.
    shared_scale: use one colour scale for all non-std panels.
    metadata: optional {key: str} written as PNG text chunks, e.g.
      ``{'RunID': run_id}``.
    peaks: optional sequence of (x_pix, y_pix, probability) drawn as open
      circles whose area grows with the probability (0 to 1), on the panels
      whose title starts with 'Posterior mean'.

  Returns:
    The path written.
  """
  plt = _pyplot()
  if not panels:
    raise ValueError('panels is empty; expected at least one map to plot.')
  items = [(k, np.asarray(v, dtype=np.float64)) for k, v in panels.items()]
  for k, v in items:
    if v.ndim != 2:
      raise ValueError(f'panel {k!r} must be a 2-D map, got shape {v.shape}.')
  n = items[0][1].shape[0]
  extent = [0, n * pixel_scale_arcmin, 0, n * pixel_scale_arcmin]
  inside = np.ones_like(items[0][1], bool) if mask is None else np.asarray(mask) > 0
  lo, hi = np.percentile(items[0][1][inside], [1.0, 99.5])
  ncols = ncols or min(len(items), 4)
  nrows = math.ceil(len(items) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.3 * nrows),
                           squeeze=False)
  for ax, (name, image) in zip(axes.ravel(), items):
    own = 'std' in name.lower() or not shared_scale
    vmin, vmax = (np.percentile(image[inside], [1.0, 99.5]) if own else (lo, hi))
    shown = np.ma.masked_where(~inside, image)
    cmap = plt.get_cmap('magma' if 'std' in name.lower() else 'inferno')
    cmap = cmap.with_extremes(bad='0.6')
    im = ax.imshow(shown, origin='lower', extent=extent, vmin=vmin, vmax=vmax,
                   cmap=cmap, interpolation='nearest')
    ax.set_title(name, fontsize=10)
    ax.set_xlabel('x [arcmin]', fontsize=8)
    ax.set_ylabel('y [arcmin]', fontsize=8)
    ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    for x, y, label in clusters or ():
      ax.plot((x + 0.5) * pixel_scale_arcmin, (y + 0.5) * pixel_scale_arcmin,
              marker='+', color='cyan', ms=8, mew=1.2)
      if label:
        ax.annotate(str(label), ((x + 0.5) * pixel_scale_arcmin,
                                 (y + 0.5) * pixel_scale_arcmin),
                    color='cyan', fontsize=6, xytext=(3, 3),
                    textcoords='offset points')
    if peaks and name.startswith('Posterior mean'):
      x, y, probability = (np.asarray(c, np.float64) for c in zip(*peaks))
      ax.scatter((x + 0.5) * pixel_scale_arcmin, (y + 0.5) * pixel_scale_arcmin,
                 s=10 + 140 * probability, facecolors='none',
                 edgecolors='lime', linewidths=1.0)
  for ax in axes.ravel()[len(items):]:
    ax.axis('off')
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  return _save(fig, path, metadata)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path, metadata):
  """Writes ``fig`` as PNG atomically (temporary file, rename); closes it."""
  plt = _pyplot()
  path = os.fspath(path)
  tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                     f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
  try:
    fig.savefig(tmp, dpi=110, format='png', metadata=metadata)
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
  return path


def plot_parameters(samples, path, bounds=None, truth=None, title=None,
                    metadata=None):
  """Writes a corner plot of posterior samples of D parameters.

  Diagonal: the histogram of each parameter with its posterior mean (solid)
  and central 68 % interval (dashed); below it, each pair's samples. With
  one parameter the figure is its histogram alone.

  Args:
    samples: ordered mapping {name: samples ``[S]``}, S >= 2, one entry per
      parameter (e.g. ``PosteriorSamples.parameters``), in the parameters'
      own units.
    path: output PNG path, written atomically (as `plot_maps`).
    bounds: optional ``[D, 2]`` prior range per parameter, used as the
      axis limits (e.g. the joint prior's ``theta_bounds``).
    truth: optional {name: value} drawn as red lines (e.g. the simulation's
      parameters).
    title: optional figure title.
    metadata: optional {key: str} PNG text chunks.

  Returns:
    The path written.

  Raises:
    ValueError: for no parameter, a parameter with fewer than 2 samples or
      with non-finite ones, samples of unequal length, or bounds not
      ``[D, 2]``.
  """
  plt = _pyplot()
  names = list(samples)
  if not names:
    raise ValueError('samples is empty; expected at least one parameter.')
  values = [np.asarray(samples[n], np.float64).reshape(-1) for n in names]
  for name, v in zip(names, values):
    if v.size < 2 or not np.all(np.isfinite(v)):
      raise ValueError(f'parameter {name!r} needs at least 2 finite samples, '
                       f'got {v.size} ({int(np.sum(~np.isfinite(v)))} not '
                       'finite).')
  if len({v.size for v in values}) != 1:
    raise ValueError('every parameter needs the same number of samples, got '
                     f'{dict(zip(names, [v.size for v in values]))}.')
  if bounds is not None:
    bounds = np.asarray(bounds, np.float64)
    if bounds.shape != (len(names), 2):
      raise ValueError(f'bounds must be [D, 2] = [{len(names)}, 2], got shape '
                       f'{bounds.shape}.')
  truth = truth or {}
  d = len(names)
  fig, axes = plt.subplots(d, d, figsize=(2.6 * d + 0.6, 2.6 * d + 0.4),
                           squeeze=False)
  limits = [tuple(bounds[i]) if bounds is not None else
            (v.min(), v.max()) for i, v in enumerate(values)]
  for i in range(d):
    for j in range(d):
      ax = axes[i, j]
      if j > i:
        ax.axis('off')
        continue
      if i == j:
        ax.hist(values[i], bins=min(30, max(5, values[i].size // 4)),
                range=limits[i], color='0.55', histtype='stepfilled')
        ax.axvline(values[i].mean(), color='k', lw=1.2)
        for q in np.percentile(values[i], [16, 84]):
          ax.axvline(q, color='k', lw=1.0, ls='--')
        ax.set_yticks([])
      else:
        ax.plot(values[j], values[i], '.', ms=3, color='0.3', alpha=0.6)
        ax.set_ylim(limits[i])
        if names[i] in truth:
          ax.axhline(truth[names[i]], color='crimson', lw=1.0)
      if names[j] in truth:
        ax.axvline(truth[names[j]], color='crimson', lw=1.0)
      ax.set_xlim(limits[j])
      ax.tick_params(labelsize=7)
      if i == d - 1:
        ax.set_xlabel(names[j], fontsize=9)
      if j == 0 and i > 0:
        ax.set_ylabel(names[i], fontsize=9)
  if d == 1:
    mean, (lo, hi) = values[0].mean(), np.percentile(values[0], [16, 84])
    axes[0, 0].set_title(f'{names[0]} = {mean:.3f} (68 %: {lo:.3f}–{hi:.3f})',
                         fontsize=9)
  if title:  # Wrapped to the figure's width (a run's description is long).
    fig.suptitle(textwrap.fill(title, width=int(14 * d + 16)), fontsize=9)
  fig.tight_layout()
  return _save(fig, path, metadata)

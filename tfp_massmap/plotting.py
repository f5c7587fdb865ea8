"""Figures of convergence maps: a row (or grid) of panels on a common scale.

matplotlib is imported lazily with the non-interactive Agg backend, so the
rest of the package never needs a display.
"""

import contextlib
import math
import os
import uuid

import numpy as np

__all__ = ['plot_maps']


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
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

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

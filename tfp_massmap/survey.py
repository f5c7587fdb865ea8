"""A COSMOS-like survey footprint and noise, made procedurally.

The embedded default problems (and the tests) need a realistic mask and
per-pixel noise without the real catalogue. This module draws them: a tilted
square footprint of 1.64 deg² (the HST/ACS COSMOS mosaic) centred in the map,
circular holes where bright stars are masked, and galaxy counts per pixel from
a Poisson law with the COSMOS density (about 64 galaxies per arcmin²), so that
the noise std of the mean ellipticity is σ_e / sqrt(N_gal) per pixel
(docs/design.md §1) with σ_e ≈ 0.30 per component.
"""

import math

import numpy as np

from tfp_massmap import _checks

__all__ = ['cosmos_like_survey']

COSMOS_AREA_DEG2 = 1.64
COSMOS_GALAXY_DENSITY = 64.0  # galaxies per arcmin²
COSMOS_SIGMA_E = 0.30  # per-component ellipticity dispersion
COSMOS_TILT_DEG = 10.0


def cosmos_like_survey(npix=128, pixel_scale_arcmin=0.8,
                       galaxy_density=COSMOS_GALAXY_DENSITY,
                       sigma_e=COSMOS_SIGMA_E, area_deg2=COSMOS_AREA_DEG2,
                       star_holes_per_deg2=25.0, seed=0):
  """Draws a COSMOS-like mask, galaxy counts and noise-std map.

  Args:
    npix: map side in pixels.
    pixel_scale_arcmin: pixel side in arcmin.
    galaxy_density: mean galaxies per arcmin² inside the footprint.
    sigma_e: per-component intrinsic ellipticity dispersion (dimensionless).
    area_deg2: footprint area in deg² (before star holes); it must fit the map.
    star_holes_per_deg2: mean number of masked bright-star discs per deg²
      (radii 0.4 to 1.5 arcmin).
    seed: integer seed (numpy Generator).

  Returns:
    dict with ``mask`` [N, N] float32 (1 = at least one galaxy), ``counts``
    [N, N] int32, ``noise_std`` [N, N, 2] float32 (σ_e/√N_gal per
    component, 0 outside the mask).
  """
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  npix = int(npix)
  if npix < 4:
    raise ValueError(f'npix must be >= 4, got {npix}.')
  side = math.sqrt(_checks.positive_scalar(area_deg2, 'area_deg2', 'deg²')) * 60.0
  width = npix * pix
  if side * (abs(math.cos(math.radians(COSMOS_TILT_DEG))) +
             abs(math.sin(math.radians(COSMOS_TILT_DEG)))) > width:
    raise ValueError(f'a {area_deg2} deg² footprint ({side:.1f} arcmin side, tilted '
                     f'{COSMOS_TILT_DEG}°) does not fit a {width:.1f} arcmin map; '
                     'use a larger npix or pixel_scale_arcmin.')
  _checks.positive_scalar(galaxy_density, 'galaxy_density', 'galaxies/arcmin²')
  _checks.positive_scalar(sigma_e, 'sigma_e')
  rng = np.random.default_rng(seed)
  centre = (np.arange(npix) + 0.5) * pix - width / 2.0
  y, x = np.meshgrid(centre, centre, indexing='ij')
  t = math.radians(COSMOS_TILT_DEG)
  u = math.cos(t) * x + math.sin(t) * y
  v = -math.sin(t) * x + math.cos(t) * y
  inside = (np.abs(u) <= side / 2) & (np.abs(v) <= side / 2)
  n_holes = rng.poisson(star_holes_per_deg2 * side**2 / 3600.0)
  for _ in range(n_holes):
    cx, cy = rng.uniform(-side / 2, side / 2, size=2)
    r = rng.uniform(0.4, 1.5)
    inside &= (x - cx)**2 + (y - cy)**2 > r**2
  counts = np.where(inside, rng.poisson(galaxy_density * pix**2, size=x.shape), 0)
  mask = counts > 0
  std = np.where(mask, sigma_e / np.sqrt(np.maximum(counts, 1)), 0.0)
  return {
      'mask': mask.astype(np.float32),
      'counts': counts.astype(np.int32),
      'noise_std': np.repeat(std[..., None], 2, axis=-1).astype(np.float32),
  }

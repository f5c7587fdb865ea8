"""Writes the tiny MassiveNuS stand-in files used by the builder test.

Same folder and file names, FITS layout (float32 primary image) and header
keyword ANGLE [deg] as the release, but 16 × 16 Gaussian maps with
std 0.01 z_s and only realisations 1, 2 (train), 8 (validation) and
9 (test). Run from anywhere: ``python make_dummy_data.py``.
"""

import pathlib

from astropy.io import fits
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SIZE = 16
ANGLE_DEG = 3.5
REALIZATIONS = (1, 2, 8, 9)
FIDUCIAL = 'convergence_gal_mnv0.00000_om0.30000_As2.1000'
# A second cosmology (only z_s = 1.0, every parameter off the fiducial) for
# the config-factory and label tests.
OTHER = 'convergence_gal_mnv0.10000_om0.28000_As1.9000'


def write(cosmology, z_source, rng):
  folder = HERE / cosmology / f'Maps{round(10 * z_source):02d}'
  folder.mkdir(parents=True, exist_ok=True)
  for r in REALIZATIONS:
    kappa = (0.01 * z_source * rng.standard_normal((SIZE, SIZE))).astype(np.float32)
    header = fits.Header()
    header['ANGLE'] = (ANGLE_DEG, 'map side [deg]')
    fits.PrimaryHDU(kappa, header).writeto(
        folder / f'WLconv_z{z_source:.2f}_{r:04d}r.fits', overwrite=True)


def main():
  rng = np.random.default_rng(20180311)
  for z_source in (0.5, 1.0, 1.5, 2.0, 2.5):
    write(FIDUCIAL, z_source, rng)
  write(OTHER, 1.0, rng)


if __name__ == '__main__':
  main()

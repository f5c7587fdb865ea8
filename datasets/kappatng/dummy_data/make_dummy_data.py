"""Writes the tiny κTNG stand-in files used by the builder test.

Same folder and file names and HDF5 layout (groups z01 … z40, each with a
float32 dataset ``kappa``) as assumed by the builder, but 8 × 8 Gaussian
maps whose std grows with the plane index, for lens-plane sets LP001 (runs
1 and 2: train), LP008 (validation) and LP009 (test), in both physics
folders. Run from anywhere: ``python make_dummy_data.py``.
"""

import pathlib

import h5py
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SIZE = 8
N_PLANES = 40
FILES = ((1, 1), (1, 2), (8, 1), (9, 1))  # (lens-plane set, run)


def main():
  rng = np.random.default_rng(20210205)
  # No time stamps in object headers, so that reruns write identical bytes.
  fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
  fcpl.set_obj_track_times(False)
  gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
  gcpl.set_obj_track_times(False)
  fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)  # Compact, newest format.
  fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
  for physics in ('fullphys', 'dmonly'):
    for lp, run in FILES:
      folder = HERE / 'kappaTNG' / physics / 'maps' / f'LP{lp:03d}'
      folder.mkdir(parents=True, exist_ok=True)
      path = folder / f'LP{lp:03d}_run{run:03d}_maps.hdf5'
      fid = h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC,
                            fcpl=fcpl, fapl=fapl)
      with h5py.File(fid) as f:
        for plane in range(1, N_PLANES + 1):
          kappa = 0.001 * plane * rng.standard_normal((SIZE, SIZE))
          group = h5py.h5g.create(f.id, f'z{plane:02d}'.encode(), gcpl=gcpl)
          h5py.Group(group).create_dataset(
              'kappa', data=kappa.astype(np.float32), track_times=False)


if __name__ == '__main__':
  main()

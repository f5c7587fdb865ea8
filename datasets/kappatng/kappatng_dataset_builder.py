"""κTNG convergence maps (Osato, Liu & Haiman 2021) as a TFDS dataset.

κTNG ray-traces IllustrisTNG300 boxes (full physics, ``fullphys``, and the
dark-matter-only twin, ``dmonly``): 100 lens-plane sets (LP001 … LP100) ×
100 ray-tracing runs = 10,000 maps of 1024 × 1024 pixels over 5° × 5°
(0.29 arcmin), each at 40 source redshifts. One HDF5 file per run:

    kappaTNG/{fullphys,dmonly}/maps/LP{lp:03d}/LP{lp:03d}_run{run:03d}_maps.hdf5

as on the release server. Inside a file, source plane i (1 … 40, redshift
``SOURCE_REDSHIFTS[i - 1]``) is the group ``z{i:02d}`` and its convergence
the dataset ``z{i:02d}/kappa`` ([N, N]); other datasets are ignored. This
layout follows the loading notebook of the release repository
(github.com/0satoken/kappaTNG, ``f["z23/kappa"]`` is z_s = 1.034) and its
download script; the map side is not stored in the file and is taken as 5°.

Configs: one per physics and source plane (``fullphys_z1.034``, …) and one
per physics with a source redshift distribution n(z) (``fullphys_cosmos``,
the default, and ``nz_config`` for any tabulated n(z)), whose map is the
n(z)-weighted sum of the planes (``plane_weights``).

Splits are by lens-plane set, since runs that share lens planes are
correlated: LP mod 10 = 8 → validation, 9 → test, otherwise train.
"""

import dataclasses
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    'Builder',
    'KappaTNGConfig',
    'plane_config',
    'nz_config',
    'plane_weights',
    'cosmos_like_nz',
    'split_of_lens_plane_set',
    'file_url',
    'PHYSICS',
    'SOURCE_REDSHIFTS',
    'FIELD_DEG',
]

PHYSICS = ('fullphys', 'dmonly')
FIELD_DEG = 5.0
# The 40 source-plane redshifts (zs.dat of github.com/0satoken/kappaTNG).
SOURCE_REDSHIFTS = (
    0.034467, 0.069515, 0.105182, 0.141510, 0.178545, 0.216332, 0.254921,
    0.294363, 0.334713, 0.376027, 0.418368, 0.461799, 0.506387, 0.552205,
    0.599329, 0.647838, 0.697818, 0.749361, 0.802561, 0.857522, 0.914352,
    0.973168, 1.034093, 1.097260, 1.162811, 1.230896, 1.301678, 1.375330,
    1.452040, 1.532007, 1.615449, 1.702597, 1.793703, 1.889038, 1.988896,
    2.093596, 2.203481, 2.318928, 2.440344, 2.568175)
_URL = ('https://idark.ipmu.jp/~jia.liu/data/kappaTNG/{physics}/maps/'
        'LP{lp:03d}/LP{lp:03d}_run{run:03d}_maps.hdf5')
_FILE_RE = re.compile(r'^LP(\d{3})_run(\d{3})_maps\.hdf5$')
# Smail et al. form n(z) ∝ z^α exp[-(z/z0)^β] of the COSMOS-like default.
_COSMOS_ALPHA, _COSMOS_BETA, _COSMOS_Z0 = 2.0, 1.5, 0.9


def file_url(physics, lens_plane_set, run):
  """Release URL of one κTNG map file."""
  return _URL.format(physics=physics, lp=lens_plane_set, run=run)


def split_of_lens_plane_set(lens_plane_set):
  """'train', 'validation' or 'test' for a lens-plane set (see module doc)."""
  return {8: 'validation', 9: 'test'}.get(int(lens_plane_set) % 10, 'train')


def cosmos_like_nz(z):
  """A smooth COSMOS-like source distribution (unnormalised).

  n(z) ∝ z² exp[−(z / 0.9)^1.5], median z ≈ 1.27: a stand-in for a deep
  space-based sample such as the COSMOS ACS catalogue of Schrabback et al.
  (2010), not its published n(z). Pass a measured table to ``nz_config``
  when you have one.

  Args:
    z: redshifts (array-like, ≥ 0).

  Returns:
    numpy array of n(z), same shape as z.
  """
  z = np.asarray(z, dtype=np.float64)
  return z**_COSMOS_ALPHA * np.exp(-(z / _COSMOS_Z0)**_COSMOS_BETA)


def plane_weights(z, n_of_z):
  """Weights w_i of the 40 source planes for a source distribution n(z).

  κ as a function of source redshift is interpolated linearly between the
  planes, from κ = 0 at z = 0 to the first plane and constant beyond the
  last one (z > 2.568). The map of the population is then
  ∫ n(z) κ(z) dz / ∫ n(z) dz = Σ_i w_i κ_i, with w_i = ∫ n h_i / ∫ n for the
  interpolation's hat functions h_i; Σ w_i ≤ 1, less than 1 by the share of
  n(z) below the first plane.

  Args:
    z: increasing redshifts of the table (≥ 0).
    n_of_z: n(z) at those redshifts (≥ 0, any normalisation); it is
      interpolated linearly and taken as 0 outside the table.

  Returns:
    numpy float64 array [40].
  """
  z = np.asarray(z, dtype=np.float64)
  n_of_z = np.asarray(n_of_z, dtype=np.float64)
  if z.ndim != 1 or z.shape != n_of_z.shape or z.size < 2:
    raise ValueError(f'z and n_of_z must be 1-D arrays of the same length '
                     f'>= 2, got shapes {z.shape} and {n_of_z.shape}.')
  if not np.all(np.isfinite(z)) or z[0] < 0 or np.any(np.diff(z) <= 0):
    raise ValueError(f'z must be finite, >= 0 and strictly increasing, got {z}.')
  if not np.all(np.isfinite(n_of_z)) or np.any(n_of_z < 0):
    raise ValueError(f'n_of_z must be finite and >= 0, got {n_of_z}.')
  if not np.any(n_of_z > 0):
    raise ValueError('n_of_z is zero everywhere; expected a distribution.')
  planes = np.concatenate([[0.0], SOURCE_REDSHIFTS])
  # Products of piecewise-linear functions, integrated on a fine grid that
  # holds every kink (trapezoid error ~ 1e-7 of the total).
  grid = np.union1d(np.linspace(0.0, max(z[-1], planes[-1]), 4001),
                    np.concatenate([z, planes]))
  n_grid = np.interp(grid, z, n_of_z, left=0.0, right=0.0)
  hats = np.stack([np.interp(grid, planes, row) for row in np.eye(planes.size)])
  weights = np.trapezoid(hats * n_grid, grid, axis=-1) / np.trapezoid(n_grid, grid)
  return weights[1:]  # The z = 0 "plane" has κ = 0.


@dataclasses.dataclass(eq=False)
class KappaTNGConfig(tfds.core.BuilderConfig):
  """One source plane, or one n(z) weighting of the planes, of κTNG.

  Attributes:
    physics: 'fullphys' (hydrodynamical TNG300) or 'dmonly' (TNG300-Dark).
    plane: source plane 1 … 40 of a single-plane config, else None.
    weights: 40 plane weights of an n(z) config (``plane_weights``), else None.
    z_source: the plane redshift, or the mean redshift of n(z).
  """
  physics: str = 'fullphys'
  plane: int | None = None
  weights: tuple[float, ...] | None = None
  z_source: float = 0.0


def plane_config(plane, physics='fullphys'):
  """Config of one source plane (1 … 40); the registered instance."""
  if physics not in PHYSICS:
    raise ValueError(f'physics must be one of {PHYSICS}, got {physics!r}.')
  if not 1 <= int(plane) <= len(SOURCE_REDSHIFTS):
    raise ValueError(f'plane must be an integer in [1, 40], got {plane!r}.')
  return Builder.builder_configs[
      f'{physics}_z{SOURCE_REDSHIFTS[int(plane) - 1]:.3f}']


def nz_config(name, z, n_of_z, physics='fullphys', description=None):
  """Config whose maps are the planes weighted by a source distribution n(z).

  Use it as ``tfds.builder('kappatng', config=nz_config(...))``.

  Args:
    name: short name; the config is called ``f'{physics}_{name}'``.
    z: increasing redshifts of the n(z) table.
    n_of_z: n(z) at those redshifts, any normalisation.
    physics: 'fullphys' or 'dmonly'.
    description: one line for the catalogue; default names the mean redshift.

  Returns:
    A ``KappaTNGConfig``.
  """
  if physics not in PHYSICS:
    raise ValueError(f'physics must be one of {PHYSICS}, got {physics!r}.')
  if not re.fullmatch(r'[A-Za-z0-9][\w.+-]*', str(name)):
    raise ValueError(f'name must be letters, digits, "_", ".", "+" or "-", '
                     f'got {name!r}.')
  weights = plane_weights(z, n_of_z)
  z = np.asarray(z, dtype=np.float64)
  n_of_z = np.asarray(n_of_z, dtype=np.float64)
  z_mean = float(np.trapezoid(z * n_of_z, z) / np.trapezoid(n_of_z, z))
  return KappaTNGConfig(
      name=f'{physics}_{name}', physics=physics,
      weights=tuple(float(w) for w in weights), z_source=z_mean,
      description=description or (
          f'{physics}: planes weighted by n(z) {name!r} (mean z = {z_mean:.3f}).'))


def _registered_configs():
  configs = []
  cosmos_z = np.linspace(0.0, 4.0, 401)
  for physics in PHYSICS:
    configs.append(nz_config(
        'cosmos', cosmos_z, cosmos_like_nz(cosmos_z), physics,
        description=f'{physics}: planes weighted by a COSMOS-like n(z) '
        '(∝ z² exp[-(z/0.9)^1.5], median z ≈ 1.27).'))
    for i, z in enumerate(SOURCE_REDSHIFTS, start=1):
      configs.append(KappaTNGConfig(
          name=f'{physics}_z{z:.3f}', physics=physics, plane=i, z_source=z,
          description=f'{physics}: source plane {i} of 40, z_s = {z}.'))
  return configs


MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the κTNG map files you need (one HDF5 file per lens-plane set LP and
ray-tracing run, 100 × 100 per physics; see github.com/0satoken/kappaTNG):

  {_URL}

with physics = fullphys or dmonly and lp, run = 1 … 100, and keep the
server's folders below a `kappaTNG` folder of the manual directory:

  <manual_dir>/kappaTNG/fullphys/maps/LP001/LP001_run001_maps.hdf5

(`dmonly` in place of `fullphys` for the dark-matter-only configs). Any subset
of the files is fine: the builder uses the files it finds; the splits are by
LP (8 → validation, 9 → test, mod 10).
<manual_dir> is <data_dir>/downloads/manual. <data_dir> is the `data_dir`
given to `tfds.builder` or `tfds.load`, else the environment variable
TFDS_DATA_DIR, else ~/tensorflow_datasets: with TFDS_DATA_DIR=/data/tfds the
files go below /data/tfds/downloads/manual (and below D/manual with
`download_and_prepare(download_dir=D)`). To read another folder, pass
`download_config=tfds.download.DownloadConfig(manual_dir=...)` to
`download_and_prepare`, or to `tfds.load` as
`download_and_prepare_kwargs={{'download_config': ...}}`.
"""


class Builder(tfds.core.GeneratorBasedBuilder):
  """κTNG convergence maps: one source plane or an n(z) mix per config."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  # TFDS infers these from the module name, which does not follow the
  # setup.py mapping of tfp_massmap.datasets to the top-level datasets/.
  code_path = epath.Path(__file__)
  pkg_dir_path = code_path.parent
  BUILDER_CONFIGS = _registered_configs()
  DEFAULT_BUILDER_CONFIG_NAME = 'fullphys_cosmos'

  def _info(self):
    scalar = tfds.features.Scalar
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'kappa': tfds.features.Tensor(
                shape=(None, None), dtype=np.float32, encoding='bytes',
                doc='convergence (dimensionless), [N, N] as stored in the '
                'HDF5 file; N = 1024 in the release'),
            'z_source': scalar(
                np.float32, doc='plane redshift, or mean redshift of n(z)'),
            'lens_plane_set': scalar(np.int32, doc='LP number, 1 … 100'),
            'run': scalar(np.int32, doc='ray-tracing run, 1 … 100'),
            'realization': scalar(np.int32, doc='100 (LP - 1) + run'),
            'pixel_scale_arcmin': scalar(
                np.float32, doc='pixel side, arcmin (300 / N)'),
        }),
        homepage='https://github.com/0satoken/kappaTNG',
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    maps_dir = dl_manager.manual_dir / 'kappaTNG' / config.physics / 'maps'
    files = sorted(maps_dir.glob('LP*/LP*_run*_maps.hdf5'))
    if not files:
      raise FileNotFoundError(
          f'No κTNG files LP<LP>/LP<LP>_run<RUN>_maps.hdf5 in {maps_dir} '
          f'(config {config.name!r}). Download for example '
          f'{file_url(config.physics, 1, 1)} to '
          f'{maps_dir / "LP001" / "LP001_run001_maps.hdf5"}.\n'
          f'{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    by_split = {'train': [], 'validation': [], 'test': []}
    for path in files:
      match = _FILE_RE.match(path.name)
      if match is None or path.parent.name != f'LP{match.group(1)}':
        raise ValueError(f'Unexpected κTNG file {path}; expected '
                         'LP<LP>/LP<LP>_run<RUN>_maps.hdf5.')
      lp, run = int(match.group(1)), int(match.group(2))
      by_split[split_of_lens_plane_set(lp)].append((path, lp, run))
    return {split: self._generate_examples(items)
            for split, items in by_split.items() if items}

  def _generate_examples(self, items):
    config = self.builder_config
    if config.plane is not None:
      weights = {config.plane: 1.0}
    else:
      weights = {i: w for i, w in enumerate(config.weights, start=1) if w > 0}
    for path, lp, run in items:
      kappa = _read_weighted_map(path, weights)
      yield path.name, {
          'kappa': kappa,
          'z_source': config.z_source,
          'lens_plane_set': lp,
          'run': run,
          'realization': 100 * (lp - 1) + run,
          'pixel_scale_arcmin': 60.0 * FIELD_DEG / kappa.shape[-1],
      }


def _read_weighted_map(path, weights):
  """Σ_i w_i κ_i (float32 [N, N]) of the planes {i: w_i} of one HDF5 file."""
  h5py = tfds.core.lazy_imports.h5py  # Not imported when registering.
  total = None
  with path.open('rb') as f, h5py.File(f, 'r') as h5:
    for plane, weight in weights.items():
      key = f'z{plane:02d}/kappa'
      if key not in h5:
        raise ValueError(f'{path}: dataset {key!r} (source plane {plane}) is '
                         f'missing; found top-level keys {sorted(h5.keys())}.')
      kappa = np.asarray(h5[key], dtype=np.float64)
      if kappa.ndim != 2 or kappa.shape[0] != kappa.shape[1]:
        raise ValueError(f'{path}: {key} must be a square 2-D map, got shape '
                         f'{kappa.shape}.')
      total = weight * kappa if total is None else total + weight * kappa
  return total.astype(np.float32)

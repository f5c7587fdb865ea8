"""MassiveNuS ray-traced convergence maps (Liu et al. 2018) as a TFDS dataset.

The release holds, for each of 101 cosmologies (Mν, Ωm, A_s) and each source
redshift z_s ∈ {0.5, 1.0, 1.5, 2.0, 2.5}, 10,000 convergence maps of
512 × 512 pixels over 3.5° × 3.5°, one FITS file per map:

    convergence_gal_mnv{Mν:.5f}_om{Ωm:.5f}_As{10⁹A_s:.4f}/
        Maps{10 z_s:02d}/WLconv_z{z_s:.2f}_{realisation:04d}r.fits

with the map side in degrees in the header keyword ``ANGLE``. One builder
config is one (cosmology, z_s) pair: the registered configs ``z0.5`` …
``z2.5`` use the fiducial cosmology; ``make_config`` builds one for any other
cosmology directory of the release (the list of 101 is not shipped here).

Splits are fixed by the realisation number r: r mod 10 = 8 → validation,
r mod 10 = 9 → test, otherwise train (80/10/10 of the 10,000).

Labels. Every example carries its cosmology as the features ``m_nu``,
``omega_m`` and ``a_s``, parsed from the cosmology folder name, so a prior
conditioned on θ trains on these maps as on the ``lognormal_kappa``
``cosmo_<N>`` maps. σ8 is not a feature: the release names only (Mν, Ωm, A_s),
and σ8 of a cosmology with massive neutrinos needs a Boltzmann code (CAMB or
CLASS, with the simulations' h = 0.7, Ωb = 0.046, n_s = 0.97), which is not a
dependency of this package; A_s is the amplitude label to use.
"""

import dataclasses
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    'Builder',
    'MassiveNuSConfig',
    'make_config',
    'cosmology_name',
    'parse_cosmology',
    'split_of_realization',
    'tarball_url',
    'FIDUCIAL_COSMOLOGY',
    'SOURCE_REDSHIFTS',
]

FIDUCIAL_COSMOLOGY = 'convergence_gal_mnv0.00000_om0.30000_As2.1000'
SOURCE_REDSHIFTS = (0.5, 1.0, 1.5, 2.0, 2.5)
# One tar archive per cosmology (all five source redshifts), linked from the
# MassiveNuS page of http://columbialensing.org.
_TARBALL_URL = ('http://astronomy.nmsu.edu/aklypin/SUsimulations/MassiveNuS/'
                'convergence_maps/{cosmology}.tar')
_COSMOLOGY_RE = re.compile(
    r'^convergence_gal_mnv(\d+\.\d{5})_om(\d+\.\d{5})_As(\d+\.\d{4})$')
_COSMOLOGY_PATTERN = 'convergence_gal_mnv{Mν:.5f}_om{Ωm:.5f}_As{10⁹A_s:.4f}'
_MAP_RE = re.compile(r'^WLconv_z(\d\.\d\d)_(\d+)r\.fits$')


def cosmology_name(m_nu, omega_m, a_s):
  """Release directory name of a cosmology.

  Args:
    m_nu: sum of neutrino masses, eV.
    omega_m: total matter density parameter (dimensionless).
    a_s: primordial amplitude A_s (dimensionless, e.g. 2.1e-9).

  Returns:
    e.g. ``'convergence_gal_mnv0.00000_om0.30000_As2.1000'``.
  """
  values = {'m_nu': m_nu, 'omega_m': omega_m, 'a_s': a_s}
  for key, value in values.items():
    if not np.isfinite(value) or value < 0:
      raise ValueError(f'{key} must be a finite number >= 0, got {value!r}.')
  if not 1e-10 < a_s < 1e-8:
    raise ValueError(f'a_s is the dimensionless amplitude A_s (about 2.1e-9), '
                     f'got {a_s!r}.')
  return f'convergence_gal_mnv{m_nu:.5f}_om{omega_m:.5f}_As{a_s * 1e9:.4f}'


def parse_cosmology(name):
  """(m_nu [eV], omega_m, a_s) from a release directory name."""
  match = _COSMOLOGY_RE.match(name)
  if match is None:
    raise ValueError(
        f'cosmology must be a MassiveNuS directory name like '
        f'{FIDUCIAL_COSMOLOGY!r}, got {name!r}.')
  m_nu, omega_m, a_s = (float(g) for g in match.groups())
  return m_nu, omega_m, a_s * 1e-9


def split_of_realization(realization):
  """'train', 'validation' or 'test' for a realisation number (see module doc)."""
  return {8: 'validation', 9: 'test'}.get(int(realization) % 10, 'train')


def tarball_url(cosmology):
  """URL of the tar archive holding every map of one cosmology."""
  parse_cosmology(cosmology)
  return _TARBALL_URL.format(cosmology=cosmology)


def _maps_folder(z_source):
  return f'Maps{round(10 * z_source):02d}'


def _map_name(z_source, realization):
  return f'WLconv_z{z_source:.2f}_{realization:04d}r.fits'


@dataclasses.dataclass(eq=False)
class MassiveNuSConfig(tfds.core.BuilderConfig):
  """One (cosmology, source redshift) of MassiveNuS.

  Attributes:
    z_source: source redshift, one of ``SOURCE_REDSHIFTS``.
    cosmology: release directory name of the cosmology.
    download: fetch the cosmology's tar archive (tens of GB) with the download
      manager instead of reading ``manual_dir``.
  """
  z_source: float = 1.0
  cosmology: str = FIDUCIAL_COSMOLOGY
  download: bool = False


def _config_name(z_source, cosmology, download):
  name = f'z{z_source:.1f}'
  if cosmology != FIDUCIAL_COSMOLOGY:
    name += '_' + cosmology[len('convergence_gal_'):]
  return name + ('_download' if download else '')


def make_config(z_source=1.0, cosmology=None, *, m_nu=None, omega_m=None,
                a_s=None, download=False):
  """Builder config for any MassiveNuS cosmology and source redshift.

  Give the cosmology either by its directory name or by its three parameters
  (the values of the release grid, which the name rounds to 5, 5 and 4
  decimals). Use it as ``tfds.builder('massivenus', config=make_config(...))``.

  Args:
    z_source: source redshift, one of 0.5, 1.0, 1.5, 2.0, 2.5.
    cosmology: directory name, e.g.
      ``'convergence_gal_mnv0.10000_om0.28000_As1.9000'``; default fiducial.
    m_nu: sum of neutrino masses, eV (with omega_m and a_s, instead of name).
    omega_m: matter density parameter.
    a_s: primordial amplitude A_s, dimensionless (e.g. 2.1e-9).
    download: download the tar archive instead of reading ``manual_dir``.

  Returns:
    A ``MassiveNuSConfig``; the registered instance for the fiducial
    cosmology read from ``manual_dir``.
  """
  z_source = float(z_source)
  if not any(abs(z_source - z) < 1e-6 for z in SOURCE_REDSHIFTS):
    raise ValueError(f'z_source must be one of {SOURCE_REDSHIFTS}, '
                     f'got {z_source!r}.')
  by_params = (m_nu, omega_m, a_s)
  if cosmology is not None and any(p is not None for p in by_params):
    raise ValueError('Give either cosmology or (m_nu, omega_m, a_s), not both.')
  if any(p is not None for p in by_params):
    if any(p is None for p in by_params):
      raise ValueError(f'm_nu, omega_m and a_s must all be given, got '
                       f'm_nu={m_nu!r}, omega_m={omega_m!r}, a_s={a_s!r}.')
    cosmology = cosmology_name(m_nu, omega_m, a_s)
  cosmology = cosmology or FIDUCIAL_COSMOLOGY
  m_nu, omega_m, a_s = parse_cosmology(cosmology)
  name = _config_name(z_source, cosmology, download)
  if name in Builder.builder_configs:
    return Builder.builder_configs[name]
  return MassiveNuSConfig(
      name=name, z_source=z_source, cosmology=cosmology, download=download,
      description=(f'z_s = {z_source:.1f}; Mν = {m_nu:g} eV, Ωm = {omega_m:g}, '
                   f'A_s = {a_s:.4g}' + ('; downloaded' if download else '')))


MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
For each cosmology you need, download its tar archive of convergence maps
(linked from the MassiveNuS page of http://columbialensing.org):

  {_TARBALL_URL.format(cosmology=_COSMOLOGY_PATTERN)}

(fiducial model: {_TARBALL_URL.format(cosmology=FIDUCIAL_COSMOLOGY)})
and extract it into the manual directory so that the maps lie at

  <manual_dir>/{FIDUCIAL_COSMOLOGY}/Maps10/WLconv_z1.00_0001r.fits

(Maps05 … Maps25 for z_s = 0.5 … 2.5). If the archive has no top-level
folder, extract it with `tar -xf <archive> -C <manual_dir>/<cosmology>`.
A subset of the realisations is fine: the builder uses the files it finds.
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
  """MassiveNuS convergence maps, one config per (cosmology, z_s)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  # TFDS infers these from the module name, which does not follow the
  # setup.py mapping of tfp_massmap.datasets to the top-level datasets/.
  code_path = epath.Path(__file__)
  pkg_dir_path = code_path.parent
  BUILDER_CONFIGS = [
      MassiveNuSConfig(name=_config_name(z, FIDUCIAL_COSMOLOGY, False),
                       z_source=z,
                       description=f'Fiducial cosmology (massless neutrinos, '
                       f'Ωm = 0.3, A_s = 2.1e-9), source redshift {z:.1f}.')
      for z in SOURCE_REDSHIFTS
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'z1.0'

  def _info(self):
    scalar = tfds.features.Scalar
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'kappa': tfds.features.Tensor(
                shape=(None, None), dtype=np.float32, encoding='bytes',
                doc='convergence (dimensionless), [N, N] as stored in the '
                'FITS file (row = y, column = x); N = 512 in the release'),
            'z_source': scalar(np.float32, doc='source redshift'),
            'm_nu': scalar(np.float32, doc='sum of neutrino masses Mν, eV '
                           '(from the cosmology folder name)'),
            'omega_m': scalar(np.float32, doc='matter density parameter Ωm '
                              '(dimensionless; from the folder name)'),
            'a_s': scalar(np.float32, doc='primordial amplitude A_s '
                          '(dimensionless, e.g. 2.1e-9; from the folder '
                          'name)'),
            'realization': scalar(np.int32, doc='realisation number r'),
            'pixel_scale_arcmin': scalar(
                np.float32, doc='pixel side, arcmin (60 ANGLE / N)'),
        }),
        homepage='http://columbialensing.org',
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    if config.download:
      root = epath.Path(dl_manager.download_and_extract(
          tarball_url(config.cosmology)))
      if (root / config.cosmology).exists():
        root = root / config.cosmology
    else:
      root = dl_manager.manual_dir / config.cosmology
    maps_dir = root / _maps_folder(config.z_source)
    pattern = f'WLconv_z{config.z_source:.2f}_*r.fits'
    files = sorted(maps_dir.glob(pattern)) if maps_dir.exists() else []
    if not files:
      raise FileNotFoundError(
          f'No MassiveNuS maps matching {pattern} in {maps_dir} (config '
          f'{config.name!r}). Download {tarball_url(config.cosmology)} and '
          f'extract it so that {maps_dir / _map_name(config.z_source, 1)} '
          f'exists.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    by_split = {'train': [], 'validation': [], 'test': []}
    for path in files:
      match = _MAP_RE.match(path.name)
      if match is None:
        raise ValueError(f'Unexpected MassiveNuS file name {path.name!r} in '
                         f'{maps_dir}; expected WLconv_z<z_s>_<NNNN>r.fits.')
      realization = int(match.group(2))
      by_split[split_of_realization(realization)].append((path, realization))
    return {split: self._generate_examples(items)
            for split, items in by_split.items() if items}

  def _generate_examples(self, items):
    config = self.builder_config
    m_nu, omega_m, a_s = parse_cosmology(config.cosmology)
    for path, realization in items:
      kappa, angle_deg = _read_map(path)
      yield path.name, {
          'kappa': kappa,
          'z_source': config.z_source,
          'm_nu': m_nu,
          'omega_m': omega_m,
          'a_s': a_s,
          'realization': realization,
          'pixel_scale_arcmin': 60.0 * angle_deg / kappa.shape[-1],
      }


def _read_map(path):
  """(kappa float32 [N, N], map side in deg) from one MassiveNuS FITS file."""
  # Imported here so that registering the builder does not import astropy.
  from astropy.io import fits  # pylint: disable=g-import-not-at-top
  with path.open('rb') as f, fits.open(f, memmap=False) as hdus:
    data = hdus[0].data
    angle = hdus[0].header.get('ANGLE')
    if data is None or data.ndim != 2 or data.shape[0] != data.shape[1]:
      shape = None if data is None else data.shape
      raise ValueError(f'{path}: expected a square 2-D convergence map in the '
                       f'primary HDU, got shape {shape}.')
    if angle is None or not float(angle) > 0:
      raise ValueError(f'{path}: header keyword ANGLE (map side, deg) must be '
                       f'a positive number, got {angle!r}.')
    return np.asarray(data, dtype=np.float32), float(angle)

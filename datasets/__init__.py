"""TFDS builders of tfp_massmap, installed as ``tfp_massmap.datasets``.

Importing this package registers the builders with ``tensorflow_datasets``
so that ``tfds.load('massivenus')``, ``tfds.load('kappatng')`` and
``tfds.load('lognormal_kappa')`` resolve.
It imports neither astropy nor h5py: the builders load them when they read
files. Imports are absolute so that each builder module is loaded (and
registered) once, also when pytest imports this folder as ``datasets``.
"""

from tfp_massmap.datasets import kappatng
from tfp_massmap.datasets import massivenus
from tfp_massmap.datasets import lognormal_kappa

"""MassiveNuS convergence maps (Liu et al. 2018): TFDS builder ``massivenus``."""

from tfp_massmap.datasets.massivenus.massivenus_dataset_builder import Builder
from tfp_massmap.datasets.massivenus.massivenus_dataset_builder import make_config
from tfp_massmap.datasets.massivenus.massivenus_dataset_builder import MassiveNuSConfig

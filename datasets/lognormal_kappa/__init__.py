"""Synthetic COSMOS-like convergence maps: TFDS builder ``lognormal_kappa``."""

from tfp_massmap.datasets.lognormal_kappa.lognormal_kappa_dataset_builder import Builder
from tfp_massmap.datasets.lognormal_kappa.lognormal_kappa_dataset_builder import (
    LognormalKappaConfig)

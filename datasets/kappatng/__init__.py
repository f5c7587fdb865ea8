"""κTNG convergence maps (Osato, Liu & Haiman 2021): TFDS builder ``kappatng``."""

from tfp_massmap.datasets.kappatng.kappatng_dataset_builder import Builder
from tfp_massmap.datasets.kappatng.kappatng_dataset_builder import KappaTNGConfig
from tfp_massmap.datasets.kappatng.kappatng_dataset_builder import nz_config
from tfp_massmap.datasets.kappatng.kappatng_dataset_builder import plane_config

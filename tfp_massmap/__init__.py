"""tfp_massmap: probabilistic dark-matter mass mapping with TensorFlow Probability."""

from tfp_massmap import lensing
from tfp_massmap.lensing import kaiser_squires
from tfp_massmap.lensing import shear_from_convergence

__version__ = '0.1.0'

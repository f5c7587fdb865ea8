"""tfp_massmap: probabilistic dark-matter mass mapping with TensorFlow Probability.

Shear γ = Aκ + n from a galaxy catalogue, an explicit Gaussian likelihood
(`ShearLikelihood`), classical baselines (Kaiser-Squires, Wiener filter) and
posterior sampling under learned or analytic priors.
"""

from tfp_massmap import catalog
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import power_spectrum
from tfp_massmap.lensing import kaiser_squires
from tfp_massmap.lensing import shear_from_convergence
from tfp_massmap.likelihood import ShearLikelihood

__version__ = '0.1.0'

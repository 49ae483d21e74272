"""Shared toolkit of the course: devices and seeds, hookable policies, caching and
patching, probes, checkpoints with a manifest, plotting, and the course tooling.

Import what you need from the submodules, or the common names from here:

    from utils import get_device, set_seed, default_profile
"""
import warnings

try:  # tqdm.auto falls back to text bars without ipywidgets; the warning it prints is noise
    from tqdm import TqdmWarning

    warnings.filterwarnings("ignore", category=TqdmWarning)
except ImportError:  # pragma: no cover
    pass

from utils.core import CourseError, default_profile, get_device, select_profile, set_seed

__all__ = ["CourseError", "default_profile", "get_device", "select_profile", "set_seed"]

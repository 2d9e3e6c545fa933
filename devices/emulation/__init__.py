"""Emulated ARM runs: build a cached Debian ARM userland and compare a bundle's outputs
under qemu-user with the host's (see environment.py for the recipe, run.py for the rules)."""
from edgepack.devices.emulation.environment import Environment, cache_root, ensure_environment
from edgepack.devices.emulation.run import (EmulationResult, OutputComparison, Tolerance,
                                            default_inputs, emulate, load_inputs)

__all__ = ["emulate", "EmulationResult", "OutputComparison", "Tolerance", "default_inputs",
           "load_inputs", "ensure_environment", "Environment", "cache_root"]

"""The registry: every patch the plugin knows, in the order they are applied."""

from af3_cpu_patch.patches import numerics

ALL_PATCHES = numerics.PATCHES

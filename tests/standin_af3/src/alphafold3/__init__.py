"""Stand-in for DeepMind's ``alphafold3`` package, written for af3-cpu-patch's tests.

Not AlphaFold 3 code: a few small modules at AF3's import paths that reproduce
the arithmetic the plugin patches, so the suite can run where no AF3 is
installed.  ``version.py`` deliberately names no release.
"""

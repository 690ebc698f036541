"""Stand-in version module.

Says "3.0.2" because DeepMind's v3.0.2, v3.0.3 and v3.0.4 all say so; the
stand-in has v3.0.2+'s layout (a separate noise_level_embeddings module).
"""

__version__ = "3.0.2"

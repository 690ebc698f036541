"""The registry: every patch the plugin knows.

``ALL_PATCHES`` is what ``import af3_cpu_patch`` installs: numerics guards,
bit-identical layout rewrites and import fixes, safe in any script.
``CLI_PATCHES`` adds what only the ``af3-cpu`` CLI wants:
``run_alphafold.main()`` on the CPU device, and result checks around its
inference; ``PROGRESS_PATCHES`` its live progress
(left out with ``--quiet``); ``BATCH_PATCHES`` what a batch worker adds:
one kept model across ``main()`` calls.  :func:`exact` keeps what
``--exact`` runs: the patches a CPU needs and those that keep stock's bits.
"""

from af3_cpu_patch.patches import layout, loops, numerics, runtime, trunk_products
from af3_cpu_patch.registry import exact  # noqa: F401 - part of the registry's API

ALL_PATCHES = numerics.PATCHES + layout.PATCHES + runtime.DEFAULT
CLI_PATCHES = ALL_PATCHES + runtime.CLI_ONLY + loops.PATCHES + layout.LOGITS_PATCHES + trunk_products.PATCHES
PROGRESS_PATCHES = runtime.PROGRESS
BATCH_PATCHES = CLI_PATCHES + (runtime.KEEP_MODEL,)

"""Start-up activation for unmodified scripts (``AF3_CPU_PATCH=1``).

``af3_cpu_patch.pth`` in site-packages imports this module only when the
variable is set to something other than ``0``/empty, so that
``AF3_CPU_PATCH=1 python run_alphafold.py ...`` is patched without editing
the script.  Importing the package installs the hooks; nothing else happens
until an AF3 module is imported.
"""

import af3_cpu_patch  # noqa: F401  (installs the import hooks)

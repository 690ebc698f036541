"""``python -m af3_cpu_patch`` is the ``af3-cpu`` command."""

from af3_cpu_patch.cli import entry

entry()

"""Stand-in for AF3's ``model/network/modules.py``: only where it gets its attention from.

Written for af3-cpu-patch's tests; not AlphaFold 3 code.  AF3 v3.0.2+ imports
tokamax here and hands ``global_config.flash_attention_implementation`` to
``tokamax.dot_product_attention``; af3-cpu reads the implementations on offer
from this module's ``tokamax``.  This stand-in offers tokamax 0.0.12's list;
with ``STANDIN_NO_TOKAMAX=1`` it imports like v3.0.0-v3.0.1 (no tokamax).
"""

import os
import types
import typing

if not os.environ.get("STANDIN_NO_TOKAMAX"):
    tokamax = types.SimpleNamespace(
        DotProductAttentionImplementation=typing.Literal["mosaic", "triton", "cudnn", "xla", "xla_chunked"]
    )

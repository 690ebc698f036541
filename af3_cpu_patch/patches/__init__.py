"""The registry: every patch the plugin knows, one module per feature.

A patch named ``a-b`` (or a family ``a-b-*``) is declared, with its code, in
``patches/a_b.py``.  ``ALL_PATCHES`` is what ``import af3_cpu_patch``
installs: numerics guards, bit-identical layout rewrites and import fixes,
safe in any script.  ``CLI_PATCHES`` adds what only the ``af3-cpu`` CLI
wants: ``run_alphafold.main()`` on the CPU device, result checks around its
inference, the run's precision policy and the speed patches;
``PROGRESS_PATCHES`` its live progress (left out with ``--quiet``);
``BATCH_PATCHES`` what a batch worker adds: one kept model across ``main()``
calls.  ``exact`` keeps what ``--exact`` runs: the patches a CPU needs and
those that keep stock's bits.  The order is the order of application (it
decides how wrappers of one function nest).
"""

from af3_cpu_patch.engine.patch import exact  # noqa: F401 - part of the registry's API
from af3_cpu_patch.patches import (
    atom_slots,
    attention_layout,
    check_results,
    denoising_step_sqrt,
    diffusion_layers_unrolled,
    diffusion_precision,
    diffusion_scaling_sqrt,
    diffusion_steps_rolled,
    jax_triton_placeholder,
    keep_model,
    lazy_ccd,
    msa_rows,
    noise_embedding_log,
    params,
    precision_policy,
    progress,
    run_alphafold_cpu_device,
    shared_noise_level,
    trunk_products,
)

NUMERICS_GUARDS = denoising_step_sqrt.PATCHES + diffusion_scaling_sqrt.PATCHES + noise_embedding_log.PATCHES
ALL_PATCHES = NUMERICS_GUARDS + attention_layout.PATCHES + jax_triton_placeholder.PATCHES
CLI_PATCHES = (
    ALL_PATCHES
    + run_alphafold_cpu_device.PATCHES
    + check_results.PATCHES
    + precision_policy.PATCHES
    + atom_slots.PATCHES
    + lazy_ccd.PATCHES
    + diffusion_precision.PATCHES
    + shared_noise_level.PATCHES
    + msa_rows.PATCHES
    + params.PATCHES
    + diffusion_steps_rolled.PATCHES
    + diffusion_layers_unrolled.PATCHES
    + attention_layout.LOGITS_PATCHES
    + trunk_products.PATCHES
)
PROGRESS_PATCHES = progress.PATCHES
BATCH_PATCHES = CLI_PATCHES + keep_model.PATCHES

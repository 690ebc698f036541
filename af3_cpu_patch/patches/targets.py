"""The AF3 modules the patches target, under every name they have had (v3.0.0 used other paths)."""

RUN_ALPHAFOLD = ("run_alphafold",)
DIFFUSION_HEAD = (
    "alphafold3.model.network.diffusion_head",  # v3.0.1 and later
    "alphafold3.model.diffusion.diffusion_head",  # v3.0.0
)
DIFFUSION_TRANSFORMER = (
    "alphafold3.model.network.diffusion_transformer",  # v3.0.1 and later
    "alphafold3.model.diffusion.diffusion_transformer",  # v3.0.0
)
EVOFORMER = ("alphafold3.model.network.evoformer", "alphafold3.model.diffusion.model")
TRUNK_MODULES = ("alphafold3.model.network.modules", "alphafold3.model.diffusion.modules")
FEATURES = ("alphafold3.model.features",)
CHEMICAL_COMPONENTS = ("alphafold3.constants.chemical_components",)
PARAMS = ("alphafold3.model.params",)

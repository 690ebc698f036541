"""A one-node SLURM for the tests of af3-cpu's SLURM paths (see local_slurm)."""

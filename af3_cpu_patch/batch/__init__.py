"""``af3-cpu batch``: many AF3 inputs on one machine or a CPU cluster.

The batch is a list of tasks (``plan``), each one AF3 input and seed, plus one
data-pipeline task per distinct chain; tasks run on an existing engine
(``engines``: a Dask cluster, dask-jobqueue on SLURM/PBS, or a shard of the
list in one process), in worker processes that keep AF3's model loaded
(``worker``), and publish their results atomically so a re-run resumes
(``layout``).
"""

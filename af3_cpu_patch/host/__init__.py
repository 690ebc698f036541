"""The host a run is on: what it really gives this process (cores, memory, under cgroups and batch schedulers)."""

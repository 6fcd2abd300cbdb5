"""`copyhunt diff`: placeholder until its issue lands (owned by the helper building it)."""

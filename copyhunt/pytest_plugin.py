"""pytest plugin (registered through the pytest11 entry point): placeholder until the gate issue lands."""

"""qctl's commands, one module per group."""

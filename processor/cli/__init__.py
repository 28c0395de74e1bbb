"""The `tidemark` command: run, validate, demo, schema, and the operations commands."""

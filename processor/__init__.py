"""The runtime, by role: `protocol` (the exactly-once core), `runtime` (the worker),
`coordination` (hand-off and replay), `kafka`, `observability`, `cli`."""

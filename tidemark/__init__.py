"""Tidemark: a Kafka-driven stateful stream processor with its state in MongoDB.

The repository keeps `config/`, `operators/`, `state/` and `processor/` at its root; this
package links them in, so the distribution installs one import package, `tidemark`, and a
user's own `config.py` or `state/` can never shadow ours.
"""

"""The runtime: worker loop, commit protocol, Kafka source and sink, dead letters, CLI."""

"""Kafka: client settings, topic checks, source positions, the transactional producer."""

"""The worker: its loop, the batch processor, and how it hears operators."""

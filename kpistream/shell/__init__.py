"""The thin asynchronous shell: Kafka ingestion, checkpoints, Prometheus export, Apprise
delivery, the embedded broker and the command line, each calling the pure core."""

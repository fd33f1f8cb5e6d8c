"""Kafka at the edges of the stream: the local broker of the embedded default, the publishers a
marketplace calls, upload events for files and URLs, and a whole-topic reader.

Modules are imported where needed (``lookalike.kafka.publisher`` pulls in kafka-python)."""

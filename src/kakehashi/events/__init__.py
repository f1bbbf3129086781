"""Events from live streams and their delivery: an on-disk outbox, then sinks (webhook, MQTT, JSONL), at least once."""

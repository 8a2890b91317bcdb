"""What the stack's test producers share (pb_produce.py, sr_produce.py): the subject name strategies, the
one-line failure, and producing serialized records in order with an idempotent producer."""

from __future__ import annotations

from confluent_kafka import Producer
from confluent_kafka.schema_registry import (
    record_subject_name_strategy,
    topic_record_subject_name_strategy,
    topic_subject_name_strategy,
)

STRATEGIES = {
    "topic": topic_subject_name_strategy,
    "record": record_subject_name_strategy,
    "topic_record": topic_record_subject_name_strategy,
}


class Failure(Exception):
    """An error worth one line on stderr (no traceback)."""


def produce(bootstrap: str, topic: str, records: list[dict]) -> list[list[int]]:
    """Produces in order and waits for every acknowledgement; returns [partition, offset] per record."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            # Fail within the test's patience instead of librdkafka's default 5 minutes.
            "message.timeout.ms": 30000,
        }
    )
    positions: list[list[int] | None] = [None] * len(records)
    errors: list[str] = []

    def on_delivery(index: int):
        def callback(err, msg):
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                positions[index] = [msg.partition(), msg.offset()]

        return callback

    for index, record in enumerate(records):
        while True:
            try:
                producer.produce(topic, on_delivery=on_delivery(index), **record)
                break
            except BufferError:  # local queue full: serve callbacks, then retry
                producer.poll(0.05)
    remaining = producer.flush(60)
    if errors:
        raise Failure("delivery failed: " + "; ".join(errors))
    if remaining or any(p is None for p in positions):
        raise Failure(f"{remaining} record(s) still undelivered after 60 s")
    return positions  # type: ignore[return-value]

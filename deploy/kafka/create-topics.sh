#!/usr/bin/env bash
# One-shot topic creation for the compose stack (runs in the apache/kafka image).
# Explicit creation: partitions cap the number of worker replicas, so they must be deliberate.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP_SERVERS:?BOOTSTRAP_SERVERS is required}"
PARTITIONS="${STREAM_PARTITIONS:-6}"
REPLICATION="${STREAM_REPLICATION_FACTOR:-1}"
TOPICS="${TOPICS:-products categories drift products.dlq}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"

for attempt in $(seq 1 30); do
  if "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1; then
    break
  fi
  if [ "$attempt" -eq 30 ]; then
    echo "create-topics: broker $BOOTSTRAP not reachable after 30 attempts" >&2
    exit 1
  fi
  sleep 2
done

for topic in $TOPICS; do
  "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION"
  # An existing topic with fewer partitions is grown (Kafka cannot shrink a topic).
  current="$("$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic "$topic" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)"
  if [ -n "$current" ] && [ "$current" -lt "$PARTITIONS" ]; then
    echo "create-topics: growing $topic from $current to $PARTITIONS partitions"
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --alter --topic "$topic" --partitions "$PARTITIONS"
  fi
  echo "create-topics: $topic ready ($PARTITIONS partitions, replication factor $REPLICATION)"
done

"""confluent-kafka helpers: client configuration (``config``) and topic administration (``admin``).

``admin`` is not imported here so that ``python -m stream_app.kafka.admin`` runs cleanly.
"""

from stream_app.kafka.config import ConnectionSettings, client_config, consumer_config, producer_config

__all__ = ["ConnectionSettings", "client_config", "consumer_config", "producer_config"]

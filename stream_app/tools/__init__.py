"""Libraries behind ``python -m stream_app produce`` (a catalog or stdin lines into a topic) and ``tail``
(print a topic, like kcat), and the topic lookup both use (``topics``)."""

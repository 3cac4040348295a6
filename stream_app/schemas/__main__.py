"""Regenerate the topic JSON Schemas: ``python -m stream_app.schemas``."""

from stream_app.schemas import write

for path in write():
    print(path)

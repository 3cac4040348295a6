"""Command-line tools: ``produce`` (replay a catalog into a topic) and ``tail`` (print a topic)."""

"""Build-time package: trains a categorizer on a catalog and writes the bundle the worker loads."""

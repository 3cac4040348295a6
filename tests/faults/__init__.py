"""Fault injection for the real worker process (see ``tests.faults.launcher``)."""

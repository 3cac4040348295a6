"""The Faust adapter of the categorizer: `run.run_worker(settings)` is ``python -m stream_app worker``.

Modules: `app` (Faust app, agent, views), `batching` (micro-batches, at-least-once acks),
`dead_letters` (raw bytes -> event or DLQ reason), `drift` (per-worker windows), `health`
(liveness/readiness decisions), `run` (start-up checks and the Faust worker).
"""

"""Faust wiring only: the app and its topics, thin agents, micro-batches in flight, the click
loop's agent side, the worker's composition root and its entry point. Nothing below this
package imports it.

Import :func:`lookalike.streams.worker.run_worker` to run a worker (it pulls in torch and Faust).
"""

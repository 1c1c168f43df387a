"""Grading jobs: the `Queue` protocol (base.py), its database implementation (database.py), and the
embedded worker pool (pool.py) that grades what a queue hands out.

The queue knows nothing of the product: what a finished job means (audit, webhooks,
metrics) is the service's, handed in as listeners.
"""

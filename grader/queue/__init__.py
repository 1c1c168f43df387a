"""The embedded job queue: jobs are rows of the submissions table, graded by a pool of worker threads.

Durable by construction: a job exists as soon as its submission is committed,
and a job left 'running' by a process that died is put back in the queue when a
worker pool starts (or when its lease runs out). The attempt counter doubles as
a fencing token, so a stale worker's result is discarded and each submission
gets exactly one report.
"""

"""The grading engine, a library: problems, plans, checks, verdicts and reports.

It knows nothing of HTTP, storage or queues; its caller passes in a sandbox backend
(`grader.isolation`) and its limits (`GradingOptions`). `grade` is the one entry point.
"""

from grader.engine.grading import DEFAULT_SEED, GradingOptions, grade

__all__ = ["DEFAULT_SEED", "GradingOptions", "grade"]

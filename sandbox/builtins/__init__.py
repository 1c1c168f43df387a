"""Trusted builders that run inside the sandbox (models and optimizers the grader hands to candidate code)."""

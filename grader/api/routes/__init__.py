"""Thin HTTP routes under /v1: parse, call grader.service, shape the answer."""

"""Exercises proven by their mutants: generate mistakes from a reference, drop the equivalent, grade the rest.

operators.py makes the mutants, probes.py decides equivalence, check.py grades
and counts, cli.py is the `grader check-problem` subcommand.
"""

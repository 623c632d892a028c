"""Operator and developer scripts; the Python ones run from the project root as modules, e.g.
`python -m scripts.simulate_call`."""

"""See the package docstring of malleability."""

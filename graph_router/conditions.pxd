# Cython: compile conditions.py as it is (no extension types; see httpserver.pxd).

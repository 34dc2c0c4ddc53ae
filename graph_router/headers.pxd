# Cython: compile headers.py as it is (no extension types; see httpserver.pxd).

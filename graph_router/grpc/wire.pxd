# Compiled (see setup.py): message framing and status trailers, on every call.

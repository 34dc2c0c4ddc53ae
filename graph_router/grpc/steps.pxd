# Compiled (see setup.py): a gRPC step call runs this module's code on every call.

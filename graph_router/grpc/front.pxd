# Compiled (see setup.py): every gRPC front call runs this module's code.

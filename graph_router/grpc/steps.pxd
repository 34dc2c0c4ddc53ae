# Compiled (see setup.py): a gRPC step call runs this module's code on every call.

# Per step call: C calls from call().
cpdef object target(object url)
cpdef list request_parts(object body, object t, object raw)
cpdef object lean_channel(object t, object max_response_bytes, object loop=*)
cpdef object lean_metadata(object headers)
cpdef object metadata(object headers)
cpdef bytes _rename(object model, object version)

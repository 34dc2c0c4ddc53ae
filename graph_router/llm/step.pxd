# Cython declarations for step.py (an augmenting .pxd; see ../httpserver.pxd).

cdef class Target:
    cdef public object template
    cdef public object url

cdef class LLMRequest:
    cdef public object budgets
    cdef public object deferred
    cdef public object fallback
    cdef public object input_tokens
    cdef public object itl
    cdef public Py_ssize_t open_streams
    cdef public object output_tokens
    cdef public object tenant
    cdef public object ttfb
    cdef public object ttft

cdef class StepTally:
    cdef public Py_ssize_t contents
    cdef public double first
    cdef public double last
    cdef public object record
    cdef public object series
    cdef public double started
    cdef public bint usage_seen

cdef class LLMStep:
    cdef public object _graph
    cdef public object _metrics
    cdef public object _series
    cdef public object fallbacks
    cdef public str label
    cdef public str node
    cdef public bint openai

cdef class _EarlyUsage:
    cdef public LLMStep _llm
    cdef public object _outer
    cdef public object _probe
    cdef public object _record
    cdef public object _metrics
    cdef public double _started
    cdef public bint _strip
    cdef public object _url
    cdef public object stream

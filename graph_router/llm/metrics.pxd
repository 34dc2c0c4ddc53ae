# Cython declarations for metrics.py (an augmenting .pxd; see ../httpserver.pxd): compiled
# because every streamed OpenAI answer ends in observe_ttft and observe_itl, which ran
# interpreted (a call into the bytecode loop for each).

cdef class StepSeries:
    cdef public object prompt
    cdef public object completion
    cdef public list ttft
    cdef public double ttft_sum
    cdef public list itl
    cdef public double itl_sum

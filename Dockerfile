# graph_router: the router, and the controller sidecar, in one small non-root image.
#
# The entrypoint takes the exact arguments KServe's controller gives its router
# (`--graph-json JSON`, no command), so this image can stand in for KServe's router image
# unchanged; `controller ...` runs the sidecar.
#
#   docker build -t graph-router:0.1.0 .
#
# .dockerignore keeps the venvs, build output and .git out of the build context; a test
# runs hadolint on this file.

# The full image has the C compiler that Cython's build of the request path needs
# (setup.py); the runtime image is the slim one of the same Python and Debian release.
FROM python:3.11-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY graph_router ./graph_router
COPY config/samples/rag-pipeline.yaml ./config/samples/
# A venv holds the app and its dependencies, so the runtime stage copies one directory.
# pip compiles the bytecode here: the runtime filesystem is read-only. The build must
# come out compiled: a pure-Python image would work, at about 1.4x the CPU per request.
RUN python -m venv /opt/graph-router \
 && /opt/graph-router/bin/pip install .
# Checked from another directory, so the installed package is imported, not /src's sources.
WORKDIR /
RUN /opt/graph-router/bin/python -c "import sys, graph_router; sys.exit(not graph_router.compiled_modules())"

FROM python:3.11-slim-bookworm
COPY --from=build /opt/graph-router /opt/graph-router
ENV PATH=/opt/graph-router/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user that exists nowhere: nothing in the image belongs to it, nothing can be changed.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["graph-router"]

# The grader service image. Production passes a normal Python base image; on machines without a
# registry, BASE_IMAGE can be an image built locally (for example from a debootstrap root filesystem).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap util-linux && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/grader
COPY pyproject.toml README.md ./
COPY grader grader
COPY sandbox sandbox
COPY reference reference
COPY problems problems
RUN pip install --no-cache-dir 'torch==2.13.0' && pip install --no-cache-dir .
ENV GRADER_DATA_DIR=/var/lib/grader
EXPOSE 8000
# The local sandbox needs root in the container (it drops candidates to their own uid) and cgroup access.
CMD ["grader", "serve", "--host", "0.0.0.0", "--port", "8000"]

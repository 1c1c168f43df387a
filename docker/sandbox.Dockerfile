# A sandbox image of the Docker backend: one interpreter (/opt/py) holding numpy, plus torch in the
# torch variant, and a copy of the runner package `sandbox/` under /opt/runner.
# Built by scripts/build-images.sh from a context it assembles under .build/ctx/: this Dockerfile,
# sandbox/ and wheels/ (wheels prepared on the host, with a requirements.txt). No network is needed.
ARG BASE_IMAGE=dl-grader/base:bookworm
FROM ${BASE_IMAGE} AS build
# The label marks this stage's leftover image (it holds the wheels) for pruning by build-images.sh.
LABEL dl-grader.stage=build
COPY wheels/ /wheels/
# /opt/py gets no pip: a separate venv holds the installer and drives it (pip --python).
RUN python3 -m venv /opt/pip-tool \
 && python3 -m venv --without-pip /opt/py \
 && /opt/pip-tool/bin/pip --python /opt/py/bin/python install --no-index --find-links=/wheels \
        --no-cache-dir --disable-pip-version-check -r /wheels/requirements.txt \
 && /opt/py/bin/python -c 'import numpy'

ARG BASE_IMAGE=dl-grader/base:bookworm
FROM ${BASE_IMAGE}
ARG VARIANT
ARG RUNNER_DIGEST
COPY --from=build /opt/py /opt/py
COPY sandbox/ /opt/runner/sandbox/
# Nothing in a sandbox needs privileges: no setuid/setgid file is left anywhere in the image.
# (find changes only those files: a blanket chmod -R here would copy all of /opt/py into a new layer.)
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} +
LABEL dl-grader.variant="${VARIANT}" dl-grader.runner="${RUNNER_DIGEST}"
ENV PYTHONPATH=/opt/runner PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
CMD ["/opt/py/bin/python", "-s", "-m", "sandbox.boot"]

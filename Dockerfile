# The grader service image (API and workers). Sandboxes are sibling containers started through the
# host's Docker daemon (GRADER_SANDBOX_BACKEND=docker); see docs/deployment.md.
#
# The build needs no network: it installs wheels prepared on the host by `scripts/build-images.sh
# --service` into .build/wheels/service (the project's wheel, its dependencies, torch==2.13.0 CPU).
# BASE_IMAGE: the local debootstrap image by default; production can pass python:3.11-slim-bookworm.
ARG BASE_IMAGE=dl-grader/base:bookworm
FROM ${BASE_IMAGE} AS build
LABEL dl-grader.stage=build
COPY .build/wheels/service/ /wheels/
RUN python3 -m venv /opt/grader \
 && /opt/grader/bin/pip install --no-index --find-links=/wheels --no-cache-dir --disable-pip-version-check \
        -r /wheels/requirements.txt \
 && /opt/grader/bin/grader --help >/dev/null

ARG BASE_IMAGE=dl-grader/base:bookworm
FROM ${BASE_IMAGE}
COPY --from=build /opt/grader /opt/grader
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} + \
 && mkdir -p /var/lib/grader
ENV PATH=/opt/grader/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GRADER_SANDBOX_BACKEND=docker GRADER_DATA_DIR=/var/lib/grader PYTHONUNBUFFERED=1
WORKDIR /var/lib/grader
EXPOSE 8000
CMD ["grader", "serve", "--host", "0.0.0.0", "--port", "8000"]

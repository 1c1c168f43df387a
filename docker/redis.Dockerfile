# The cluster's broker: redis-server from Debian bookworm's packages on the project's base image.
# Built by `scripts/build-images.sh --cluster` from a context it assembles under .build/ctx/redis (this
# file, redis-entrypoint.sh and debs/). Like the other images it builds with no network: debs/
# holds the .deb files (the packages and the dependencies the base image lacks, as its own apt resolved them
# from bookworm, bookworm-updates and bookworm-security), which build-images.sh fetched beforehand into
# .build/debs/; apt installs them from those files only.
#
# The server runs as the unprivileged user `redis` (uid 999), with its data (appendonly file and
# snapshots) in /var/lib/redis, where the compose file mounts a volume. The password comes from
# REDIS_PASSWORD or from the file named by REDIS_PASSWORD_FILE (a compose secret); without one it
# does not start. See docs/deployment.md.
ARG BASE_IMAGE=dl-grader/base:bookworm
FROM ${BASE_IMAGE}
# The .deb files stay in this layer (about their size, compressed); the legacy builder has no build-time mount.
COPY debs/ /tmp/debs/
# A fixed uid, so that a volume's owner means the same user in every build of this image.
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --no-create-home \
        --shell /usr/sbin/nologin redis \
 && printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null /tmp/debs/*.deb \
 && dpkg-query -W redis-server redis-tools \
 && rm -f /usr/sbin/policy-rc.d \
 && rm -rf /tmp/debs /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && find / -xdev -perm /6000 -type f -exec chmod a-s {} + \
 && install -d -o redis -g redis -m 0700 /var/lib/redis \
 && install -d -o redis -g redis -m 0700 /run/redis \
 && redis-server --version
COPY redis-entrypoint.sh /usr/local/bin/redis-entrypoint
USER redis
WORKDIR /var/lib/redis
VOLUME /var/lib/redis
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["redis-entrypoint", "health"]
ENTRYPOINT ["redis-entrypoint"]
CMD ["serve"]

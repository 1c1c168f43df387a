# The cluster's shared store: PostgreSQL 15 from Debian bookworm's packages on the project's base image.
# Built by `scripts/build-images.sh --cluster` from a context it assembles under .build/ctx/postgres (this
# file, postgres-entrypoint.sh and debs/). Like the other images it builds with no network: debs/
# holds the .deb files (the packages and the dependencies the base image lacks, as its own apt resolved them
# from bookworm, bookworm-updates and bookworm-security), which build-images.sh fetched beforehand into
# .build/debs/; apt installs them from those files only.
#
# The server runs as the unprivileged user `postgres` (uid 999). Its data directory is
# /var/lib/postgresql/data/15 inside the volume mounted at /var/lib/postgresql/data; the entrypoint creates
# it on first start, with the role and database `grader` (POSTGRES_USER, POSTGRES_DB) owning the database
# and the password from POSTGRES_PASSWORD or the file named by POSTGRES_PASSWORD_FILE. Connections over the
# network need that password (scram-sha-256); the superuser `postgres` has none and logs in only through the
# container's own socket. See docs/deployment.md.
ARG BASE_IMAGE=dl-grader/base:bookworm
FROM ${BASE_IMAGE}
# The .deb files stay in this layer (about their size, compressed); the legacy builder has no build-time mount.
COPY debs/ /tmp/debs/
# A fixed uid, so that a volume's owner means the same user in every build of this image.
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --no-create-home \
        --shell /bin/sh postgres \
 && printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confold -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null \
        /tmp/debs/*.deb \
 && dpkg-query -W postgresql-15 \
 && rm -f /usr/sbin/policy-rc.d \
 && rm -rf /tmp/debs /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && find / -xdev -perm /6000 -type f -exec chmod a-s {} + \
 && test ! -e /var/lib/postgresql/15/main \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
 && /usr/lib/postgresql/15/bin/postgres --version
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data/15 POSTGRES_USER=grader POSTGRES_DB=grader
USER postgres
WORKDIR /var/lib/postgresql
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# Over TCP: the first start's set-up runs a server on a private socket only, which must not count as ready.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD pg_isready -q -h 127.0.0.1 -p 5432 -U "$POSTGRES_USER" -d "$POSTGRES_DB"
ENTRYPOINT ["postgres-entrypoint"]
CMD ["postgres"]
# SIGINT: PostgreSQL's "fast" shutdown (rolls back open transactions, checkpoints, exits).
STOPSIGNAL SIGINT

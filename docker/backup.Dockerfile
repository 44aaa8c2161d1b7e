# syntax=docker/dockerfile:1.7
# Image of `caduceus-backup` (package caduceus-backup) with pg_dump/pg_restore of the database
# major version. Build from the repository root, tagged `<version>-pg<PG_MAJOR>` — the tag the
# operator runs by default (`spec.backup.image.tag` defaults to `<API image tag>-pg<major of
# spec.database.version>`):
#   docker build -f docker/backup.Dockerfile -t ghcr.io/caduceus-health/caduceus-backup:0.1.0-pg16 .
# Another major: --build-arg PG_MAJOR=17 -t ghcr.io/caduceus-health/caduceus-backup:0.1.0-pg17
# The version label equals the crate version, the binary name/path equal what the workspace
# builds, and PG_MAJOR equals the major of the operator's default PostgreSQL version:
# e2e/tests/dockerfiles.rs checks all three.
#
# Why the final stage is Debian and not distroless: pg_dump/pg_restore are dynamically linked
# against libpq and its dependencies (OpenSSL, Kerberos, LDAP, zlib, lz4, zstd). Copying that
# closure into distroless by hand is fragile, so the final stage is debian:bookworm-slim holding
# only the PostgreSQL client of the right major version (from the PostgreSQL project's apt
# repository, signed with the key Debian's postgresql-common ships). It still runs as uid 65532,
# with an exec-form entrypoint: no shell is needed at runtime.

ARG RUST_VERSION=1.95
ARG PG_MAJOR=16

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p caduceus-backup --bin caduceus-backup \
    && install -D -m 0755 target/release/caduceus-backup /out/caduceus-backup

FROM docker.io/library/debian:bookworm-slim
ARG PG_MAJOR
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates postgresql-common; \
    /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    ln -s "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" /usr/local/bin/pg_dump; \
    ln -s "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_restore" /usr/local/bin/pg_restore; \
    apt-get purge -y --auto-remove postgresql-common; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    groupadd --gid 65532 nonroot; \
    useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot; \
    "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" --version
LABEL org.opencontainers.image.title="caduceus-backup" \
      org.opencontainers.image.description="Caduceus encrypted backup agent with pg_dump/pg_restore" \
      org.opencontainers.image.source="https://github.com/caduceus-health/caduceus" \
      org.opencontainers.image.url="https://github.com/caduceus-health/caduceus" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Caduceus"
COPY --from=build /out/caduceus-backup /usr/local/bin/caduceus-backup
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/bin:/usr/bin:/bin"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/caduceus-backup"]

